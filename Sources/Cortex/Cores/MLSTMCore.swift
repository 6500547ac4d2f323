#if canImport(Glibc)
import Glibc
#endif

/// Mirrors cortexcore 0.1.6 `cortex.cells.mlstm.mLSTMCell` (seed: `mLSTMCore`) and its
/// kernels `kernels/pytorch/mlstm.py`: `mlstm_recurrent_step_stabilized_simple` (step
/// mode, and sequences no longer than `chunk_size`) and `mlstm_chunkwise_simple`
/// (longer sequences: full chunks in the parallel closed form, the remainder stepwise).
///
/// Cell: depthwise causal conv + SiLU gives q = k; v is the raw input; the input and
/// forget gate pre-activations are linear maps of [q, k, v] (one per head). Per head,
/// matrix memory C [DH, DH], normaliser n [DH], stabiliser m:
///
///     m' = max(logσ(f) + m, i),  C' = e^{logσ(f)+m−m'}·C + e^{i−m'}·(k/√DH) vᵀ
///     h  = qᵀC' / (max(|qᵀn'|, e^{−m'}) + 1e-6)
///
/// then a per-head LayerNorm (group norm, weight only). The chunkwise form is the same
/// recurrence regrouped per chunk — except where the reference's own two paths differ:
/// a reset strictly inside a chunk masks that chunk's pre-reset tokens but the carried C
/// is only reset at chunk starts (README "differences from the reference"). Cortex
/// reproduces each path exactly, as the trained model saw it.
/// State: `c [B, NH, DH, DH]`, `n [B, NH, DH, 1]`, `m [B, NH, 1, 1]`, conv's `conv`.
///
/// Axon options: `use_axon_qkv` maps the conv output through an AxonLayer `qk` (then
/// SiLU: q = k) and the input through an AxonLayer `v` (state `mlstm_qkv.{qk,v}.*`);
/// `use_axon_layer` computes the gate pre-activations with AxonLayers `3H → NH`
/// (state `mlstm.{igate,fgate}.*`).
public struct MLSTMCore: RecurrentModule {
    public struct Config: Sendable, Equatable {
        public var hiddenSize: Int
        public var heads: Int = 4
        public var chunkSize: Int = 64
        public var convKernel: Int = 4
        public var axonLayer: AxonLayerOption = .off
        public var axonQKV: AxonLayerOption = .off
        /// `cortex_math: "consistent"`: the chunkwise path clears the carried memory at a
        /// reset inside a chunk, as the step path does (README).
        public var consistent = false
    }

    let hidden: Int, heads: Int, headDim: Int, chunkSize: Int
    let conv: CausalConv1dCore
    let gateWeight: PackedMatrix?  // [2·NH, 3H]: igate rows, then fgate rows (nil: Axon gates)
    let gateBias: Tensor?    // [2·NH]
    /// Routed adapters of igate and fgate (empty without them).
    let gateAdapters: [LowRankAdapter]
    let axonQK: AxonLayer?, axonV: AxonLayer?, axonI: AxonLayer?, axonF: AxonLayer?
    let consistent: Bool
    let normWeight: Tensor  // [H]

    public init(config: Config, weights: WeightSource, prefix: String) throws {
        let H = config.hiddenSize, NH = config.heads
        guard NH >= 1, H % NH == 0 else {
            throw CortexError.unsupported("mlstm cell: num_heads \(NH) must divide hidden_size \(H)")
        }
        hidden = H; heads = NH; headDim = H / NH; chunkSize = config.chunkSize
        consistent = config.consistent
        conv = try CausalConv1dCore(
            config: .init(hiddenSize: H, kernelSize: config.convKernel, bias: true, channelMixing: false),
            weights: weights, prefix: prefix + "conv1d_cell.")
        axonQK = try config.axonQKV.make(inFeatures: H, outFeatures: H, weights: weights,
                                         prefix: prefix + "qk_layer.", statePath: "mlstm_qkv.qk")
        axonV = try config.axonQKV.make(inFeatures: H, outFeatures: H, weights: weights,
                                        prefix: prefix + "v_layer.", statePath: "mlstm_qkv.v")
        axonI = try config.axonLayer.make(inFeatures: 3 * H, outFeatures: NH, weights: weights,
                                          prefix: prefix + "igate.", statePath: "mlstm.igate")
        axonF = try config.axonLayer.make(inFeatures: 3 * H, outFeatures: NH, weights: weights,
                                          prefix: prefix + "fgate.", statePath: "mlstm.fgate")
        gateAdapters = config.axonLayer.isOn ? [] : try ["igate", "fgate"].compactMap {
            try weights.adapter(prefix + $0, in: 3 * H, out: NH)
        }
        if config.axonLayer.isOn {
            gateWeight = nil; gateBias = nil
        } else {
            let gw = try Tensor(zeros: [2 * NH, 3 * H]), gb = try Tensor(zeros: [2 * NH])
            for (g, name) in ["igate", "fgate"].enumerated() {
                let w = try weights.tensor(prefix + name + ".weight", shape: [NH, 3 * H])
                let b = try weights.tensor(prefix + name + ".bias", shape: [NH])
                withExtendedLifetime((w, b)) {  // raw pointers must not outlive the buffers
                    (gw.data + g * NH * 3 * H).update(from: w.data, count: NH * 3 * H)
                    (gb.data + g * NH).update(from: b.data, count: NH)
                }
            }
            gateWeight = try PackedMatrix(gw); gateBias = gb
        }
        normWeight = try weights.tensor(prefix + "outnorm.weight", shape: [H])
    }

    public var inputSize: Int { hidden }
    public var outputSize: Int { hidden }
    public var stateSpecs: [StateSpec] {
        [StateSpec(name: "c", perRow: [heads, headDim, headDim]),
         StateSpec(name: "n", perRow: [heads, headDim, 1]),
         StateSpec(name: "m", perRow: [heads, 1, 1])] + conv.stateSpecs + axonLayers.flatMap(\.stateSpecs)
    }
    /// The Axon layers in use, in state order (the reference creates them in this order).
    var axonLayers: [AxonLayer] { [axonQK, axonV, axonI, axonF].compactMap { $0 } }
    public var parameterCount: Int {
        (gateWeight?.count ?? 0) + (gateBias?.count ?? 0) + normWeight.count + conv.parameterCount
            + gateAdapters.reduce(0) { $0 + $1.a.count + $1.b.count }
            + axonLayers.reduce(0) { $0 + $1.parameterCount }
    }

    public func run(
        x: UnsafePointer<Float>, y: UnsafeMutablePointer<Float>,
        batch: Int, time: Int,
        state: StateSlots, resets: UnsafePointer<UInt8>?, arena: Arena
    ) throws {
        let B = batch, T = time, H = hidden, NH = heads, DH = headDim
        guard B > 0, T > 0 else { return }
        let i0 = state.startIndex
        let cS = state[i0], nS = state[i0 + 1], mS = state[i0 + 2]
        // q = k = SiLU(conv(x)); gate input per row is [q, k, v].
        var qk = try arena.take(B * T * H)
        try conv.run(x: x, y: qk, batch: B, time: T, state: state[(i0 + 3)..<(i0 + 4)], resets: resets, arena: arena)
        Kernels.silu(qk, B * T * H)
        var v = x
        // AxonLayer slots follow the conv's, in the order of `axonLayers`.
        let n = AxonCore.slotCount
        var slot = i0 + 4
        if let axonQK, let axonV {
            let q2 = try arena.take(B * T * H), v2 = try arena.take(B * T * H)
            try axonQK.run(x: qk, y: q2, batch: B, time: T, state: state[slot..<(slot + n)], resets: resets, arena: arena)
            Kernels.silu(q2, B * T * H)
            try axonV.run(x: x, y: v2, batch: B, time: T, state: state[(slot + n)..<(slot + 2 * n)], resets: resets, arena: arena)
            qk = q2; v = UnsafePointer(v2)
            slot += 2 * n
        }
        let gin = try arena.take(B * T * 3 * H)
        for r in 0..<(B * T) {
            (gin + r * 3 * H).update(from: qk + r * H, count: H)
            (gin + r * 3 * H + H).update(from: qk + r * H, count: H)
            (gin + r * 3 * H + 2 * H).update(from: v + r * H, count: H)
        }
        let gates = try arena.take(B * T * 2 * NH)
        if let gateWeight, let gateBias {
            gateWeight.apply(m: B * T, gin, ldx: 3 * H, into: gates, ldy: 2 * NH)
            Vec.addRows(gates, rows: B * T, gateBias.data, 2 * NH)
            if let routing = arena.routing(rowsPerStream: T) {
                for (g, adapter) in gateAdapters.enumerated() {
                    adapter.add(gin, rows: B * T, ldx: 3 * H, into: gates + g * NH, ldy: 2 * NH, routing: routing)
                }
            }
        } else if let axonI, let axonF {
            try axonI.run(x: gin, into: gates, ldOut: 2 * NH, batch: B, time: T, state: state[slot..<(slot + n)],
                          resets: resets, arena: arena)
            try axonF.run(x: gin, into: gates + NH, ldOut: 2 * NH, batch: B, time: T,
                          state: state[(slot + n)..<(slot + 2 * n)], resets: resets, arena: arena)
        }

        // (row, head) pairs are independent through time: split them over the threads, each
        // part with its own scratch from its own arena.
        let parts = Parallel.parts(work: B * NH * T * DH * DH, grain: 1 << 15, items: B * NH)
        arena.prepareParts(parts)
        Parallel.run(parts: parts) { part, parts in
            let own = arena.part(part)
            let scratch: HeadScratch
            do { scratch = try HeadScratch(arena: own, dh: DH, cs: min(chunkSize, T)) } catch { own.failure = error; return }
            for pair in Parallel.slice(B * NH, part: part, parts: parts, align: 1) {
                let b = pair / NH, n = pair % NH
                let head = HeadSeries(
                    q: UnsafePointer(qk + b * T * H + n * DH), v: v + b * T * H + n * DH, stride: H,
                    i: UnsafePointer(gates + b * T * 2 * NH + n), f: UnsafePointer(gates + b * T * 2 * NH + NH + n),
                    gateStride: 2 * NH, resets: resets.map { $0 + b * T }, out: y + b * T * H + n * DH)
                let c = cS + (b * NH + n) * DH * DH, nn = nS + (b * NH + n) * DH, m = mS + b * NH + n
                if T <= chunkSize {
                    for t in 0..<T { recurrentStep(head, t, c: c, n: nn, m: m, s: scratch) }
                } else {
                    chunkwise(head, T, c: c, n: nn, m: m, s: scratch)
                }
            }
        }
        if let e = arena.partFailure(parts) { throw e }
        Kernels.headNorm(y, rows: B * T, heads: NH, headDim: DH, weight: normWeight.data, eps: 1e-5)
    }

    /// One head's inputs over time (row t at `stride`·t).
    struct HeadSeries {
        let q: UnsafePointer<Float>, v: UnsafePointer<Float>, stride: Int
        let i: UnsafePointer<Float>, f: UnsafePointer<Float>, gateStride: Int
        let resets: UnsafePointer<UInt8>?
        let out: UnsafeMutablePointer<Float>

        func reset(_ t: Int) -> Bool { resets.map { $0[t] != 0 } ?? false }
    }

    /// Per-call scratch, reused by every head.
    struct HeadScratch {
        let ks: UnsafeMutablePointer<Float>     // [CS, DH] scaled keys of a chunk
        let A: UnsafeMutablePointer<Float>      // [CS] cumulative log forget gates
        let e: UnsafeMutablePointer<Float>      // [CS] exp(loggates)
        let pre: UnsafeMutablePointer<Float>    // [CS] resets up to and including s
        let base: UnsafeMutablePointer<Float>   // [CS] A just before the last reset ≤ s (consistent math)
        let kv: UnsafeMutablePointer<Float>     // [DH, DH]
        let ksum: UnsafeMutablePointer<Float>   // [DH]
        let E: UnsafeMutablePointer<Float>      // [CS, CS] q·ksᵀ, then the normalised decay-weighted scores
        let qs: UnsafeMutablePointer<Float>     // [CS, DH] q rows scaled by inter factor / normaliser
        let ve: UnsafeMutablePointer<Float>     // [CS, DH] v rows scaled by exp(loggates)
        let vec: UnsafeMutablePointer<Float>    // [DH]

        init(arena: Arena, dh: Int, cs: Int) throws {
            ks = try arena.take(cs * dh); A = try arena.take(cs); e = try arena.take(cs); pre = try arena.take(cs); base = try arena.take(cs)
            kv = try arena.take(dh * dh); ksum = try arena.take(dh); E = try arena.take(cs * cs)
            qs = try arena.take(cs * dh); ve = try arena.take(cs * dh); vec = try arena.take(dh)
        }
    }

    /// `mlstm_recurrent_step_stabilized_simple` for step t (resets applied first).
    func recurrentStep(_ h: HeadSeries, _ t: Int, c: UnsafeMutablePointer<Float>, n: UnsafeMutablePointer<Float>,
                       m: UnsafeMutablePointer<Float>, s: HeadScratch) {
        let DH = headDim
        if h.reset(t) { c.update(repeating: 0, count: DH * DH); n.update(repeating: 0, count: DH); m.pointee = 0 }
        let q = h.q + t * h.stride, k = q, v = h.v + t * h.stride
        let ig = h.i[t * h.gateStride], logf = Kernels.logSigmoid(h.f[t * h.gateStride])
        let mNew = max(logf + m.pointee, ig)
        let fg = expf(logf + m.pointee - mNew), iAct = expf(ig - mNew)
        let scale = Float(Double(DH).squareRoot())
        let ks = s.vec
        for a in 0..<DH { ks[a] = k[a] / scale }
        for a in 0..<DH {
            let row = c + a * DH, w = iAct * ks[a]
            for b in 0..<DH { row[b] = fg * row[b] + w * v[b] }
            n[a] = fg * n[a] + iAct * ks[a]
        }
        var qn: Float = 0
        for a in 0..<DH { qn += q[a] * n[a] }
        let denom = max(abs(qn), expf(-mNew)) + 1e-6
        let out = h.out + t * h.stride
        for b in 0..<DH { out[b] = 0 }
        for a in 0..<DH { let qa = q[a]; let row = c + a * DH; for b in 0..<DH { out[b] += qa * row[b] } }
        for b in 0..<DH { out[b] /= denom }
        m.pointee = mNew
    }

    /// `mlstm_chunkwise_simple`: full chunks in closed form, then the remainder stepwise.
    func chunkwise(_ h: HeadSeries, _ T: Int, c: UnsafeMutablePointer<Float>, n: UnsafeMutablePointer<Float>,
                   m: UnsafeMutablePointer<Float>, s: HeadScratch) {
        let DH = headDim, CS = chunkSize
        let chunks = T / CS
        let scale = Float(Double(DH).squareRoot())
        let hasResets = h.resets != nil
        for j in 0..<chunks {
            let t0 = j * CS
            // The carried state is reset only at the chunk's first step (reference behaviour).
            if h.reset(t0) { c.update(repeating: 0, count: DH * DH); n.update(repeating: 0, count: DH); m.pointee = 0 }
            var acc: Float = 0, count: Float = 0, base: Float = 0
            for u in 0..<CS {
                let t = t0 + u
                if h.reset(t) { count += 1; base = acc }
                acc = u == 0 ? Kernels.logSigmoid(h.f[t * h.gateStride]) : acc + Kernels.logSigmoid(h.f[t * h.gateStride])
                s.A[u] = acc
                s.pre[u] = count
                s.base[u] = base
                let k = h.q + t * h.stride
                for a in 0..<DH { s.ks[u * DH + a] = k[a] / scale }
            }
            let L = s.A[CS - 1], total = count
            // Chunk-local gate weights; tokens followed by a reset in this chunk drop out.
            var mLoc = -Float.infinity
            for u in 0..<CS {
                var lg = (h.i[(t0 + u) * h.gateStride] - s.A[u]) + L
                if hasResets && total - s.pre[u] > 0 { lg = -.infinity }
                s.e[u] = lg
                mLoc = max(mLoc, lg)
            }
            for u in 0..<CS { s.e[u] = expf(s.e[u] - mLoc) }
            // Outputs of this chunk from the carried (C, n, m) and the chunk's own tokens:
            // scores q·ksᵀ for the whole chunk at once, then decay, mask and normalise.
            let mj = m.pointee
            BLAS.gemm(transB: true, m: CS, n: CS, k: DH, a: h.q + t0 * h.stride, lda: h.stride, b: s.ks, ldb: DH, c: s.E, ldc: CS)
            for u in 0..<CS {
                let q = h.q + (t0 + u) * h.stride
                let er = s.E + u * CS
                var dMax = -Float.infinity
                for w in 0...u where !hasResets || s.pre[w] == s.pre[u] {
                    dMax = max(dMax, (s.A[u] - s.A[w]) + h.i[(t0 + w) * h.gateStride])
                }
                // The step path restarts its stabiliser at 0 on a reset; the reference's
                // chunkwise form keeps the carried one (differences only via exp(−m)).
                let restarted = consistent && hasResets && s.pre[u] != 0
                let stab = max(dMax, restarted ? s.A[u] - s.base[u] : mj + s.A[u])
                let interFactor = (hasResets && s.pre[u] != 0) ? 0 : expf(mj + s.A[u] - stab)
                var eSum: Float = 0
                for w in 0..<CS {
                    if w <= u && (!hasResets || s.pre[w] == s.pre[u]) {
                        er[w] *= expf((s.A[u] - s.A[w]) + h.i[(t0 + w) * h.gateStride] - stab)
                        eSum += er[w]
                    } else {
                        er[w] = 0
                    }
                }
                var interN: Float = 0
                for a in 0..<DH { interN += (q[a] * interFactor) * n[a] }
                let inv = 1 / (max(abs(eSum + interN), expf(-stab)) + 1e-6)
                for w in 0...u { er[w] *= inv }
                let qsr = s.qs + u * DH
                for a in 0..<DH { qsr[a] = (q[a] * interFactor) * inv }
            }
            // out = E·V (intra-chunk) + Qs·C (carried memory).
            let out = h.out + t0 * h.stride
            BLAS.gemm(m: CS, n: DH, k: CS, a: s.E, lda: CS, b: h.v + t0 * h.stride, ldb: h.stride, c: out, ldc: h.stride)
            BLAS.gemm(m: CS, n: DH, k: DH, a: s.qs, lda: DH, b: c, ldb: DH, c: out, ldc: h.stride, beta: 1)
            // Carry (C, n, m) to the next chunk: kv = ksᵀ·(v∘e), ksum = ksᵀ·e.
            for u in 0..<CS {
                let v = h.v + (t0 + u) * h.stride, dst = s.ve + u * DH
                for b in 0..<DH { dst[b] = v[b] * s.e[u] }
            }
            BLAS.gemm(transA: true, m: DH, n: DH, k: CS, a: s.ks, lda: DH, b: s.ve, ldb: DH, c: s.kv, ldc: DH)
            for a in 0..<DH {
                var acc: Float = 0
                for u in 0..<CS { acc += s.ks[u * DH + a] * s.e[u] }
                s.ksum[a] = acc
            }
            if consistent && total > 0 {
                // Consistent math: a reset anywhere in the chunk clears the carried memory,
                // as the step path does; the stabiliser restarts from 0 at the last reset.
                let mNew = max(L - s.base[CS - 1], mLoc), fresh = expf(mLoc - mNew)
                for a in 0..<(DH * DH) { c[a] = s.kv[a] * fresh }
                for a in 0..<DH { n[a] = s.ksum[a] * fresh }
                m.pointee = mNew
                continue
            }
            let mNew = max(L + mj, mLoc)
            let decay = expf(L + mj - mNew), fresh = expf(mLoc - mNew)
            for a in 0..<(DH * DH) { c[a] = c[a] * decay + s.kv[a] * fresh }
            for a in 0..<DH { n[a] = n[a] * decay + s.ksum[a] * fresh }
            m.pointee = mNew
        }
        for t in (chunks * CS)..<T { recurrentStep(h, t, c: c, n: n, m: m, s: s) }
    }
}

/// The stack config's "mlstm" cell (see `CoreKind`).
extension MLSTMCore: CoreKind {
    static let tag = "mlstm"
    static let classNames = (blocks: "mLSTMCell", scaffolds: "mLSTMCore")
    static let schema: StackSchema.Fields = ["num_heads": .init(type: .int(min: 1)), "chunk_size": .init(type: .int(min: 1)),
                                           "conv1d_kernel_size": .init(type: .int(min: 1)), "use_axon_layer": .init(type: .bool),
                                           "use_axon_qkv": .init(type: .bool), "axon_layer_config": StackSchema.axonConfig,
                                           "axon_qkv_config": StackSchema.axonConfig, "cortex_math": .init(type: .string)]
    static let axonFlags = ["use_axon_layer", "use_axon_qkv"]

    static func parseCore(_ json: JSON, hiddenSize: Int) throws -> CoreConfig {
        var c = Config(hiddenSize: hiddenSize, heads: try json.intField("num_heads", default: 4, in: 1...4096, core: tag),
                       chunkSize: try json.intField("chunk_size", default: 64, in: 1...65536, core: tag),
                       convKernel: try json.intField("conv1d_kernel_size", default: 4, in: 1...1024, core: tag))
        c.axonLayer = try json.axonOption("use_axon_layer", config: "axon_layer_config", hiddenSize: hiddenSize, core: tag)
        c.axonQKV = try json.axonOption("use_axon_qkv", config: "axon_qkv_config", hiddenSize: hiddenSize, core: tag)
        c.consistent = try json.mathField(core: tag)
        let config = c
        var core = CoreConfig(kind: Self.self) { w, p in try MLSTMCore(config: config, weights: w, prefix: p) }
        // Without use_axon_qkv the reference always feeds mLSTM the raw up-projection.
        core.takesRawPreUpInput = config.axonQKV == .off
        return core
    }
}
