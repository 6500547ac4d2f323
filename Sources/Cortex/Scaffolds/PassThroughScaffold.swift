/// Mirrors cortexcore 0.1.6 `cortex.blocks.passthrough.PassThroughBlock` (seed:
/// `PassThroughScaffold`): the core applied as is — no projection, no residual.
/// Its state is the core's, nested under the core's class name.
public struct PassThroughScaffold: RecurrentModule {
    public let core: any RecurrentModule
    public let coreName: String

    public init(core: any RecurrentModule, coreName: String) {
        self.core = core
        self.coreName = coreName
    }

    public var inputSize: Int { core.inputSize }
    public var outputSize: Int { core.outputSize }
    public var stateSpecs: [StateSpec] { core.stateSpecs.map { $0.prefixed(coreName) } }
    public var parameterCount: Int { core.parameterCount }

    public func run(
        x: UnsafePointer<Float>, y: UnsafeMutablePointer<Float>,
        batch: Int, time: Int,
        state: StateSlots, resets: UnsafePointer<UInt8>?, arena: Arena
    ) throws {
        try core.run(x: x, y: y, batch: batch, time: time, state: state, resets: resets, arena: arena)
    }
}

/// Builds the core a config names, with its weights under `prefix`.
func makeCore(_ config: CoreConfig, weights: WeightSource, prefix: String) throws -> any RecurrentModule {
    switch config {
    case .lstm(let c):
        return try LSTMCore(config: c, weights: weights, prefix: prefix + "net.")
    case .causalConv1d(let c):
        return try CausalConv1dCore(config: c, weights: weights, prefix: prefix)
    case .agalite(let c):
        return try AGaLiTeCore(config: c, weights: weights, prefix: prefix)
    case .slstm(let c):
        return try SLSTMCore(config: c, weights: weights, prefix: prefix)
    case .mlstm(let c):
        return try MLSTMCore(config: c, weights: weights, prefix: prefix)
    case .xl(let c):
        return try XLCore(config: c, weights: weights, prefix: prefix)
    case .axon(let c):
        return try AxonCore(config: c, weights: weights, prefix: prefix)
    }
}
