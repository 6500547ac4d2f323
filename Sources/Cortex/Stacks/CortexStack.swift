/// Mirrors cortexcore 0.1.6 `cortex.stacks.base.CortexStack`: the scaffolds in order,
/// then `norm` (a LayerNorm with weight and bias, eps 1e-5) when `post_norm`.
/// State keys are `<ScaffoldClass>_<index>.<CoreClass>.<name>`.
public struct CortexStack: RecurrentModule {
    public let config: StackConfig
    let scaffolds: [any RecurrentModule]
    let names: [String]
    /// State slots per scaffold, computed once (run() must not allocate).
    let slotCounts: [Int]
    let norm: (weight: Tensor, bias: Tensor)?

    public init(config: StackConfig, weights: WeightSource) throws {
        self.config = config
        // Every Linear built below loads its adapters while `routing` is set.
        weights.routing = config.routedAdapter
        defer { weights.routing = nil }
        var scaffolds: [any RecurrentModule] = []
        var names: [String] = []
        for (i, sc) in config.scaffolds.enumerated() {
            let scaffoldName = sc.className(config.spelling)
            // Weights use cortexcore's module paths: blocks.<i>.<...>
            do {
                scaffolds.append(try sc.build(weights: weights, prefix: "blocks.\(i).", dHidden: config.dHidden,
                                              spelling: config.spelling))
            } catch let e as CortexError {
                throw e.prefixed("\(scaffoldName)_\(i)")
            }
            names.append("\(scaffoldName)_\(i)")
        }
        self.scaffolds = scaffolds
        self.names = names
        self.slotCounts = scaffolds.map { $0.stateSpecs.count }
        if config.postNorm {
            norm = (try weights.tensor("norm.weight", shape: [config.dHidden]),
                    try weights.tensor("norm.bias", shape: [config.dHidden]))
        } else {
            norm = nil
        }
    }

    public var inputSize: Int { config.dHidden }
    public var outputSize: Int { config.dHidden }

    public var stateSpecs: [StateSpec] {
        zip(names, scaffolds).flatMap { name, s in s.stateSpecs.map { $0.prefixed(name) } }
    }

    public var parameterCount: Int {
        scaffolds.reduce(0) { $0 + $1.parameterCount } + (norm.map { $0.weight.count + $0.bias.count } ?? 0)
    }

    public func run(
        x: UnsafePointer<Float>, y: UnsafeMutablePointer<Float>,
        batch: Int, time: Int,
        state: StateSlots, resets: UnsafePointer<UInt8>?, arena: Arena
    ) throws {
        let n = batch * time * config.dHidden
        // Activations ping-pong between two scratch buffers; the last block writes y.
        var input = x
        var slot = state.startIndex
        let even = scaffolds.count > 1 ? try arena.take(n) : y
        let odd = scaffolds.count > 2 ? try arena.take(n) : y
        for (i, s) in scaffolds.enumerated() {
            let out = i == scaffolds.count - 1 ? y : (i % 2 == 0 ? even : odd)
            let k = slotCounts[i]
            try s.run(x: input, y: out, batch: batch, time: time,
                      state: state[slot..<(slot + k)], resets: resets, arena: arena)
            slot += k
            input = UnsafePointer(out)
        }
        if scaffolds.isEmpty { y.update(from: x, count: n) }
        if let norm {
            Kernels.layerNorm(y, rows: batch * time, n: config.dHidden,
                              weight: norm.weight.data, bias: norm.bias.data, eps: 1e-5)
        }
    }
}
