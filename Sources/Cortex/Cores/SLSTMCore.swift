#if canImport(Glibc)
import Glibc
#endif

/// Mirrors cortexcore 0.1.6 `cortex.cells.slstm.sLSTMCell` (seed: `sLSTMCore`) with its
/// kernel `kernels/pytorch/slstm.py::slstm_sequence_pytorch`.
///
/// Input path: an optional depthwise causal conv + SiLU (`conv1d_kernel_size`) feeds the
/// i and f gates; z and o see the raw input. Each gate is a per-head `[DH, DH]` map
/// (block-diagonal over heads), the recurrence `recurrent_kernel [NH, 4·DH, DH]` is
/// block-diagonal too. Stabilised exponential gating per element:
///
///     m' = (n == 0) ? i_raw : max(i_raw, m + logσ(f_raw))
///     i = min(e^{i_raw − m'}, 1),  f = min(e^{m + logσ(f_raw) − m'}, 1)
///     c' = f·c + i·tanh(z_raw),  n' = f·n + i,  y' = σ(o_raw)·c'/(n' + 1e-6)
///
/// The output is y' after a per-head LayerNorm (group norm, weight only, eps 1e-5);
/// the state keeps y' before it. State: `y, c, n, m [B, H]` and the conv's `conv`.
/// With `use_axon_layer`, two AxonLayers `H → 2H` replace the headwise gate maps
/// (`if_fused` on the conv path, `zo_fused` on the input), their state under
/// `slstm.if_fused.*` and `slstm.zo_fused.*`.
public struct SLSTMCore: RecurrentModule {
    public struct Config: Sendable, Equatable {
        public var hiddenSize: Int
        public var heads: Int = 4
        public var convKernel: Int = 4
        public var axonLayer: AxonLayerOption = .off
    }

    let hidden: Int, heads: Int, headDim: Int
    let conv: CausalConv1dCore?
    /// i and f gates over the conv output, z and o over the input: block-diagonal `[2H, H]`
    /// (nil with `use_axon_layer`, where the AxonLayers compute them).
    let weightIF: PackedMatrix?, weightZO: PackedMatrix?
    let axonIF: AxonLayer?, axonZO: AxonLayer?
    /// Routed adapters of the four headwise gates, [i, f, z, o] (empty without them).
    let gateAdapters: [LowRankAdapter]
    /// Recurrence per head, `[4·DH, DH]` each (the reference's `[NH, 4·DH, DH]`): rows gate-major.
    let recurrent: [PackedMatrix]
    let bias: Tensor        // [4H], gate-major
    let normWeight: Tensor  // [H]

    public init(config: Config, weights: WeightSource, prefix: String) throws {
        let H = config.hiddenSize, NH = config.heads
        guard NH >= 1, H % NH == 0 else {
            throw CortexError.unsupported("slstm cell: num_heads \(NH) must divide hidden_size \(H)")
        }
        hidden = H; heads = NH; headDim = H / NH
        let DH = headDim
        if config.convKernel > 0 {
            conv = try CausalConv1dCore(
                config: .init(hiddenSize: H, kernelSize: config.convKernel, bias: true, channelMixing: false),
                weights: weights, prefix: prefix + "conv1d_cell.")
        } else {
            conv = nil
        }
        // Headwise maps y[n, f] = Σ_d x[n, d]·W[n, d, f] as rows of a block-diagonal matrix.
        func blockRows(_ names: [String]) throws -> PackedMatrix {
            let out = try Tensor(zeros: [names.count * H, H])
            for (g, name) in names.enumerated() {
                let w = try weights.tensor(prefix + name + ".weight", shape: [NH, DH, DH])
                for n in 0..<NH { for d in 0..<DH { for f in 0..<DH {
                    out.data[(g * H + n * DH + f) * H + n * DH + d] = w.data[(n * DH + d) * DH + f]
                } } }
            }
            return try PackedMatrix(out)
        }
        axonIF = try config.axonLayer.make(inFeatures: H, outFeatures: 2 * H, weights: weights,
                                           prefix: prefix + "if_fused.", statePath: "slstm.if_fused")
        axonZO = try config.axonLayer.make(inFeatures: H, outFeatures: 2 * H, weights: weights,
                                           prefix: prefix + "zo_fused.", statePath: "slstm.zo_fused")
        weightIF = config.axonLayer.isOn ? nil : try blockRows(["igate", "fgate"])
        weightZO = config.axonLayer.isOn ? nil : try blockRows(["zgate", "ogate"])
        gateAdapters = config.axonLayer.isOn ? [] : try ["igate", "fgate", "zgate", "ogate"].compactMap {
            try weights.headwiseAdapter(prefix + $0, heads: NH, headDim: DH)
        }
        let rk = try weights.tensor(prefix + "recurrent_kernel", shape: [NH, 4 * DH, DH])
        recurrent = try (0..<NH).map { n in
            let head = try Tensor(zeros: [4 * DH, DH])
            head.data.update(from: rk.data + n * 4 * DH * DH, count: 4 * DH * DH)
            return try PackedMatrix(head)
        }
        let b = try weights.tensor(prefix + "bias", shape: [NH, 4, DH])
        let flat = try Tensor(zeros: [4 * H])
        for n in 0..<NH { for g in 0..<4 { for d in 0..<DH { flat.data[g * H + n * DH + d] = b.data[(n * 4 + g) * DH + d] } } }
        bias = flat
        normWeight = try weights.tensor(prefix + "outnorm.weight", shape: [H])
    }

    public var inputSize: Int { hidden }
    public var outputSize: Int { hidden }
    public var stateSpecs: [StateSpec] {
        ["y", "c", "n", "m"].map { StateSpec(name: $0, perRow: [hidden]) } + (conv?.stateSpecs ?? [])
            + (axonIF?.stateSpecs ?? []) + (axonZO?.stateSpecs ?? [])
    }
    public var parameterCount: Int {
        let perGate = heads * headDim * headDim
        let gates = axonIF.map { $0.parameterCount + (axonZO?.parameterCount ?? 0) } ?? 4 * perGate
            + gateAdapters.reduce(0) { $0 + $1.a.count + $1.b.count }
        return gates + 4 * perGate + bias.count + normWeight.count + (conv?.parameterCount ?? 0)
    }

    public func run(
        x: UnsafePointer<Float>, y: UnsafeMutablePointer<Float>,
        batch: Int, time: Int,
        state: StateSlots, resets: UnsafePointer<UInt8>?, arena: Arena
    ) throws {
        let B = batch, T = time, H = hidden, G = 4 * H, DH = headDim, NH = heads
        guard B > 0, T > 0 else { return }
        let i0 = state.startIndex
        let ys = state[i0], cs = state[i0 + 1], ns = state[i0 + 2], ms = state[i0 + 3]
        // Conv + SiLU for the i/f path (its window state is the last slot).
        var xif = x
        if let conv {
            let xc = try arena.take(B * T * H)
            try conv.run(x: x, y: xc, batch: B, time: T, state: state[(i0 + 4)...], resets: resets, arena: arena)
            Kernels.silu(xc, B * T * H)
            xif = UnsafePointer(xc)
        }
        // Feed-forward pre-activations of every step, gate-major [i, f, z, o] per row.
        let wx = try arena.take(B * T * G)
        if let weightIF, let weightZO {
            weightIF.apply(m: B * T, xif, ldx: H, into: wx, ldy: G)
            weightZO.apply(m: B * T, x, ldx: H, into: wx + 2 * H, ldy: G)
            if let routing = arena.routing(rowsPerStream: T) {
                for (g, adapter) in gateAdapters.enumerated() {
                    adapter.add(g < 2 ? xif : x, rows: B * T, ldx: H, into: wx + g * H, ldy: G, routing: routing)
                }
            }
        } else if let axonIF, let axonZO {
            let first = i0 + 4 + (conv == nil ? 0 : 1), n = AxonCore.slotCount
            try axonIF.run(x: xif, into: wx, ldOut: G, batch: B, time: T, state: state[first..<(first + n)],
                           resets: resets, arena: arena)
            try axonZO.run(x: x, into: wx + 2 * H, ldOut: G, batch: B, time: T, state: state[(first + n)..<(first + 2 * n)],
                           resets: resets, arena: arena)
        }
        // Heads are independent through time (block-diagonal recurrence), and so are the
        // batch's rows: each thread runs whole sequences for its (head, row group) items, no
        // synchronisation between steps. A row's products do not depend on the others.
        let parts = Parallel.parts(work: B * T * H, grain: 2048, items: NH * B)
        let groups = max(1, min(B, parts / NH))  // row groups per head
        let raws = try arena.take(parts * B * 4 * DH)
        Parallel.run(parts: parts) { part, parts in
            let raw = raws + part * B * 4 * DH  // [rows, 4·DH] pre-activations of one head
            for item in Parallel.slice(NH * groups, part: part, parts: parts, align: 1) {
                let n = item / groups, rows = Parallel.slice(B, part: item % groups, parts: groups, align: 1)
                let o0 = n * DH, b0 = rows.lowerBound
                for t in 0..<T {
                    if let resets {
                        for b in rows where resets[b * T + t] != 0 {
                            (ys + b * H + o0).update(repeating: 0, count: DH)
                            (cs + b * H + o0).update(repeating: 0, count: DH)
                            (ns + b * H + o0).update(repeating: 0, count: DH)
                            (ms + b * H + o0).update(repeating: 0, count: DH)
                        }
                    }
                    for b in rows {
                        for g in 0..<4 {
                            let dst = raw + (b - b0) * 4 * DH + g * DH
                            dst.update(from: wx + (b * T + t) * G + g * H + o0, count: DH)
                            Vec.add(dst, bias.data + g * H + o0, DH)
                        }
                    }
                    recurrent[n].apply(m: rows.count, ys + b0 * H + o0, ldx: H, into: raw, ldy: 4 * DH, accumulate: true)
                    for b in rows {
                        let r = raw + (b - b0) * 4 * DH
                        let yb = ys + b * H + o0, cb = cs + b * H + o0, nb = ns + b * H + o0, mb = ms + b * H + o0
                        for j in 0..<DH {
                            let iraw = r[j], fraw = r[DH + j], zraw = r[2 * DH + j], oraw = r[3 * DH + j]
                            let logsig = min(fraw, 0) - log1pf(expf(-abs(fraw)))
                            let logfplusm = mb[j] + logsig
                            let mnew = nb[j] == 0 ? iraw : max(iraw, logfplusm)
                            let og = 1 / (1 + expf(-oraw))
                            let ig = min(expf(iraw - mnew), 1)
                            let fg = min(expf(logfplusm - mnew), 1)
                            let cnew = fg * cb[j] + ig * tanhf(zraw)
                            let nnew = fg * nb[j] + ig
                            yb[j] = og * cnew / (nnew + 1e-6)
                            cb[j] = cnew; nb[j] = nnew; mb[j] = mnew
                        }
                        (y + (b * T + t) * H + o0).update(from: yb, count: DH)
                    }
                }
            }
        }
        // Per-head LayerNorm of the outputs (group norm, weight only).
        Kernels.headNorm(y, rows: B * T, heads: heads, headDim: DH, weight: normWeight.data, eps: 1e-5)
    }
}

/// The stack config's "slstm" cell (see `CoreKind`).
extension SLSTMCore: CoreKind {
    static let tag = "slstm"
    static let classNames = (blocks: "sLSTMCell", scaffolds: "sLSTMCore")
    static let schema: StackSchema.Fields = ["num_heads": .init(type: .int(min: 1)), "conv1d_kernel_size": .init(type: .int(min: 0)),
                                           "dropout": .init(type: .number(min: 0)), "use_axon_layer": .init(type: .bool),
                                           "axon_layer_config": StackSchema.axonConfig]
    static let axonFlags = ["use_axon_layer"]

    static func parseCore(_ json: JSON, hiddenSize: Int) throws -> CoreConfig {
        var c = Config(hiddenSize: hiddenSize, heads: try json.intField("num_heads", default: 4, in: 1...4096, core: tag),
                       convKernel: try json.intField("conv1d_kernel_size", default: 4, in: 0...1024, core: tag))
        c.axonLayer = try json.axonOption("use_axon_layer", config: "axon_layer_config", hiddenSize: hiddenSize, core: tag)
        let config = c
        return CoreConfig(kind: Self.self) { w, p in try SLSTMCore(config: config, weights: w, prefix: p) }
    }
}
