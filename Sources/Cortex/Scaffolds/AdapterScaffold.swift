/// Mirrors cortexcore 0.1.6 `AdapterBlock` (seed: `AdapterScaffold`): a base scaffold
/// followed by a gated bottleneck adapter, identity at init (gate and `up` start at 0):
///
///     y = base(x);  out = y + g ⊙ up(act(down(LN(y))))
///
/// LN has weight and bias; `g` is one scalar or one value per channel
/// (`per_channel_gate`); act is GELU, SiLU, or ReLU for any other name, as in the
/// reference. State: the base's, under `wrapped`. Weights: the base under
/// `wrapped_block.`; cortexcore also registers the base's core as `cell.` (the same
/// module, so the same values), which is checked and accepted.
public struct AdapterScaffold: RecurrentModule {
    public enum Activation: Sendable, Equatable {
        case gelu, silu, relu

        static func named(_ s: String) -> Activation { s == "gelu" ? .gelu : (s == "silu" ? .silu : .relu) }
    }

    let base: any RecurrentModule
    let hidden: Int
    let norm: Norm
    let down: Linear, up: Linear
    let gate: Tensor  // [] or [H]
    let activation: Activation

    init(base: any RecurrentModule, hidden H: Int, bottleneck: Int, perChannelGate: Bool, activation: Activation,
         weights: WeightSource, prefix: String) throws {
        self.base = base
        hidden = H
        norm = try Norm(weights, prefix + "ln", features: H, bias: true)
        down = try Linear(weights, prefix + "down", in: H, out: bottleneck)
        up = try Linear(weights, prefix + "up", in: bottleneck, out: H)
        gate = perChannelGate ? try weights.tensor(prefix + "gate", shape: [H])
                              : try Tensor(shape: [], values: [try weights.scalar(prefix + "gate")])
        self.activation = activation
        try weights.alias(prefix + "cell.", of: prefix + "wrapped_block.cell.")
    }

    public var inputSize: Int { hidden }
    public var outputSize: Int { hidden }
    public var stateSpecs: [StateSpec] { base.stateSpecs.map { $0.prefixed("wrapped") } }
    public var parameterCount: Int {
        base.parameterCount + norm.parameterCount + down.parameterCount + up.parameterCount + gate.count
    }

    public func run(
        x: UnsafePointer<Float>, y: UnsafeMutablePointer<Float>,
        batch: Int, time: Int,
        state: StateSlots, resets: UnsafePointer<UInt8>?, arena: Arena
    ) throws {
        let N = batch * time, H = hidden, K = down.outFeatures
        try base.run(x: x, y: y, batch: batch, time: time, state: state, resets: resets, arena: arena)
        let t = try arena.take(N * H), d = try arena.take(N * K), a = try arena.take(N * H)
        t.update(from: y, count: N * H)
        norm.apply(t, rows: N)
        let routing = arena.routing(rowsPerStream: time)
        down.apply(t, rows: N, into: d, routing: routing)
        switch activation {
        case .gelu: Kernels.gelu(d, N * K)
        case .silu: Kernels.silu(d, N * K)
        case .relu: Kernels.map(d, N * K) { $0.replacing(with: 0, where: $0 .< 0) }
        }
        up.apply(d, rows: N, into: a, routing: routing)
        // Raw pointers hoisted out of the loops (a property access per element retains).
        let perChannel = gate.count == H && gate.shape.count == 1, g = gate.data
        for r in 0..<N {
            for j in 0..<H { y[r * H + j] += g[perChannel ? j : 0] * a[r * H + j] }
        }
    }
}
