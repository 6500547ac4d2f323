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
