/// Mirrors cortexcore 0.1.6 `PreUpBlock` / `PreUpGatedBlock` (seed: `PreUpScaffold`,
/// `PreUpGatedScaffold`): the core runs at `d_inner = int(proj_factor · d_hidden)`.
///
///     [a, z] = in_proj(LN(x)),  y = core(act ? SiLU(a) : a)
///     out = out_proj((y + skip ⊙ SiLU(a)) ⊙ SiLU(z))
///     PreUp: x + out;  PreUpGated: GRUGate(x, out)
///
/// LN is a LayerNorm without bias. The core sees the raw `a` when it is an mLSTM without
/// `use_axon_qkv`, whatever `activate_cell_input` says (as the reference does).
public struct PreUpScaffold: RecurrentModule {
    let core: any RecurrentModule
    let coreName: String
    let hidden: Int, inner: Int
    let norm: Norm
    let inProj: Linear, outProj: Linear
    let skip: Tensor  // learnable_skip [d_inner]
    let activateCoreInput: Bool
    let gate: GRUGate?

    init(core: any RecurrentModule, coreName: String, hidden H: Int, inner: Int, activateCoreInput: Bool, gated: Bool,
         weights: WeightSource, prefix: String) throws {
        self.core = core
        self.coreName = coreName
        hidden = H
        self.inner = inner
        norm = try Norm(weights, prefix + "norm", features: H)
        inProj = try Linear(weights, prefix + "in_proj", in: H, out: 2 * inner)
        outProj = try Linear(weights, prefix + "out_proj", in: inner, out: H)
        skip = try weights.tensor(prefix + "learnable_skip", shape: [inner])
        self.activateCoreInput = activateCoreInput
        gate = gated ? try GRUGate(weights, prefix + "gate.", hidden: H) : nil
    }

    public var inputSize: Int { hidden }
    public var outputSize: Int { hidden }
    public var stateSpecs: [StateSpec] { core.stateSpecs.map { $0.prefixed(coreName) } }
    public var parameterCount: Int {
        core.parameterCount + norm.parameterCount + inProj.parameterCount + outProj.parameterCount + skip.count
            + (gate?.parameterCount ?? 0)
    }

    public func run(
        x: UnsafePointer<Float>, y: UnsafeMutablePointer<Float>,
        batch: Int, time: Int,
        state: StateSlots, resets: UnsafePointer<UInt8>?, arena: Arena
    ) throws {
        let N = batch * time, H = hidden, D = inner
        let xn = try arena.take(N * H)
        xn.update(from: x, count: N * H)
        norm.apply(xn, rows: N)
        let proj = try arena.take(N * 2 * D)
        // The reference flattens [B·T, ·] for its projections (adapters only at T = 1);
        // its gates see [B, T, ·].
        let flat = arena.routingFlattened(time: time), rows = arena.routing(rowsPerStream: time)
        inProj.apply(xn, rows: N, into: proj, routing: flat)
        let a = try arena.take(N * D), aAct = try arena.take(N * D), zAct = try arena.take(N * D)
        for r in 0..<N {
            (a + r * D).update(from: proj + r * 2 * D, count: D)
            (zAct + r * D).update(from: proj + r * 2 * D + D, count: D)
        }
        aAct.update(from: a, count: N * D)
        Kernels.silu(aAct, N * D)
        Kernels.silu(zAct, N * D)
        let inner = try arena.take(N * D)
        try core.run(x: activateCoreInput ? aAct : a, y: inner, batch: batch, time: time,
                     state: state, resets: resets, arena: arena)
        let s = skip.data  // hoisted out of the loop
        for r in 0..<N {
            for j in 0..<D {
                let i = r * D + j
                inner[i] = (inner[i] + s[j] * aAct[i]) * zAct[i]
            }
        }
        if let gate {
            let out = try arena.take(N * H)
            outProj.apply(inner, rows: N, into: out, routing: flat)
            try gate.apply(x: x, y: out, rows: N, into: y, arena: arena, routing: rows)
        } else {
            outProj.apply(inner, rows: N, into: y, routing: flat)
            Vec.add(y, x, N * H)
        }
    }
}

/// Mirrors cortexcore 0.1.6 `PostUpBlock` / `PostUpGatedBlock` (seed: `PostUpScaffold`,
/// `PostUpGatedScaffold`): the core at `d_hidden`, then an FFN of width
/// `int(proj_factor · d_hidden)`, each sublayer pre-normed (LayerNorm without bias):
///
///     PostUp:      y = x + core(LN(x));           out = y + FFN(LN'(y))
///     PostUpGated: y = GRUGate₁(x, core(LN₁(x)));  out = GRUGate₂(y, FFN(LN₂(y)))
///
/// FFN(v) = W₂ SiLU(W₁ v + b₁) + b₂.
public struct PostUpScaffold: RecurrentModule {
    let core: any RecurrentModule
    let coreName: String
    let hidden: Int, inner: Int
    let norm1: Norm, norm2: Norm
    let ffnIn: Linear, ffnOut: Linear
    let gates: (GRUGate, GRUGate)?

    init(core: any RecurrentModule, coreName: String, hidden H: Int, inner: Int, gated: Bool,
         weights: WeightSource, prefix: String) throws {
        self.core = core
        self.coreName = coreName
        hidden = H
        self.inner = inner
        // The two variants name the same parts differently.
        let names = gated ? ("norm1", "norm2", "ffn_in", "ffn_out") : ("norm", "ffn_norm", "out1", "out2")
        norm1 = try Norm(weights, prefix + names.0, features: H)
        norm2 = try Norm(weights, prefix + names.1, features: H)
        ffnIn = try Linear(weights, prefix + names.2, in: H, out: inner)
        ffnOut = try Linear(weights, prefix + names.3, in: inner, out: H)
        gates = gated ? (try GRUGate(weights, prefix + "gate1.", hidden: H), try GRUGate(weights, prefix + "gate2.", hidden: H)) : nil
    }

    public var inputSize: Int { hidden }
    public var outputSize: Int { hidden }
    public var stateSpecs: [StateSpec] { core.stateSpecs.map { $0.prefixed(coreName) } }
    public var parameterCount: Int {
        core.parameterCount + norm1.parameterCount + norm2.parameterCount + ffnIn.parameterCount + ffnOut.parameterCount
            + (gates.map { $0.0.parameterCount + $0.1.parameterCount } ?? 0)
    }

    public func run(
        x: UnsafePointer<Float>, y: UnsafeMutablePointer<Float>,
        batch: Int, time: Int,
        state: StateSlots, resets: UnsafePointer<UInt8>?, arena: Arena
    ) throws {
        let N = batch * time, H = hidden
        let xn = try arena.take(N * H), coreOut = try arena.take(N * H), mid = try arena.take(N * H)
        // The reference flattens [B·T, ·] for the FFN (adapters only at T = 1); its gates
        // see [B, T, ·].
        let flat = arena.routingFlattened(time: time), rows = arena.routing(rowsPerStream: time)
        xn.update(from: x, count: N * H)
        norm1.apply(xn, rows: N)
        try core.run(x: xn, y: coreOut, batch: batch, time: time, state: state, resets: resets, arena: arena)
        // First sublayer's output `mid`, then the FFN on LN'(mid).
        if let gates {
            try gates.0.apply(x: x, y: coreOut, rows: N, into: mid, arena: arena, routing: rows)
        } else {
            for i in 0..<(N * H) { mid[i] = x[i] + coreOut[i] }
        }
        xn.update(from: mid, count: N * H)
        norm2.apply(xn, rows: N)
        let hiddenFFN = try arena.take(N * inner)
        ffnIn.apply(xn, rows: N, into: hiddenFFN, routing: flat)
        Kernels.silu(hiddenFFN, N * inner)
        ffnOut.apply(hiddenFFN, rows: N, into: coreOut, routing: flat)
        if let gates {
            try gates.1.apply(x: mid, y: coreOut, rows: N, into: y, arena: arena, routing: rows)
        } else {
            for i in 0..<(N * H) { y[i] = mid[i] + coreOut[i] }
        }
    }
}
