#if canImport(Glibc)
import Glibc
#endif

/// Mirrors cortexcore 0.1.6 `cortex.cells.xl.XLCell` (seed: `XLCore`) with its kernel
/// `kernels/pytorch/txl.py::txl_pytorch`: Transformer-XL attention over
/// `[memory; inputs]` with relative positions and segment masks.
///
/// Keys/values cover the `M = mem_len` remembered inputs and the T new ones; query t may
/// see key l when `l ≤ M + t` and both carry the same segment id. Segment ids continue
/// from the memory's last one and advance at every reset, so a reset hides the past
/// without erasing it. Logits `((q+u)·k + shift((q+v)·r)) · d_head^-½`, masked with the
/// float minimum, softmax, then `o_proj`. `r = r_proj(sinusoid(L−1 … 0))`.
///
/// State: `mem [B, mem_len, d_model]` and `mem_seg [B, mem_len]`. A fresh state holds
/// `mem_len` zero slots with segment −1 — the same id new tokens get before any reset,
/// so they are attended; this is why the reference's step and sequence paths differ
/// (README). cortexcore keeps `mem_seg` as int64; Cortex stores the ids as float32,
/// exact for |id| < 2^24.
///
/// `use_axon_qkv`: q, k, v come from AxonLayers (state `xl_qkv.{q,k,v}.*`). As in the
/// reference, k and v run over `[memory; inputs]` on every call with a reset at the
/// first position and wherever the segment id changes, so their carried state never
/// reaches the output (it is still kept, as the reference keeps it).
public struct XLCore: RecurrentModule {
    public struct Config: Sendable, Equatable {
        public var hiddenSize: Int
        public var heads: Int = 4
        public var headDim: Int? = nil
        public var memLen: Int = 128
        public var useBias: Bool = true
        public var axonQKV: AxonLayerOption = .off
        /// `cortex_math: "consistent"` (README): sequence mode attends to the last
        /// `mem_len` tokens only, as step mode does, and fresh memory slots are empty.
        public var consistent = false
    }

    let model: Int, heads: Int, headDim: Int, memLen: Int
    let wq: Tensor?, wk: Tensor?, wv: Tensor?, wr: Tensor, wo: Tensor
    let bq: Tensor?, bk: Tensor?, bv: Tensor?, bo: Tensor?
    let axonQ: AxonLayer?, axonK: AxonLayer?, axonV: AxonLayer?
    let consistent: Bool
    let u: Tensor, vBias: Tensor  // [heads, headDim]

    public init(config: Config, weights: WeightSource, prefix: String) throws {
        model = config.hiddenSize
        heads = config.heads
        headDim = config.headDim ?? model / heads
        guard config.headDim != nil || headDim * heads == model else {
            throw CortexError.unsupported("xl cell: n_heads \(heads) must divide hidden_size \(model) when head_dim is not set")
        }
        memLen = config.memLen
        let HD = heads * headDim
        consistent = config.consistent
        let axon = config.axonQKV
        axonQ = try axon.make(inFeatures: model, outFeatures: HD, weights: weights, prefix: prefix + "q_proj.", statePath: "xl_qkv.q")
        axonK = try axon.make(inFeatures: model, outFeatures: HD, weights: weights, prefix: prefix + "k_proj.", statePath: "xl_qkv.k")
        axonV = try axon.make(inFeatures: model, outFeatures: HD, weights: weights, prefix: prefix + "v_proj.", statePath: "xl_qkv.v")
        let linear = !axon.isOn
        wq = linear ? try weights.tensor(prefix + "q_proj.weight", shape: [HD, model]) : nil
        wk = linear ? try weights.tensor(prefix + "k_proj.weight", shape: [HD, model]) : nil
        wv = linear ? try weights.tensor(prefix + "v_proj.weight", shape: [HD, model]) : nil
        wr = try weights.tensor(prefix + "r_proj.weight", shape: [HD, model])
        wo = try weights.tensor(prefix + "o_proj.weight", shape: [model, HD])
        let bias = config.useBias && linear
        bq = bias ? try weights.tensor(prefix + "q_proj.bias", shape: [HD]) : nil
        bk = bias ? try weights.tensor(prefix + "k_proj.bias", shape: [HD]) : nil
        bv = bias ? try weights.tensor(prefix + "v_proj.bias", shape: [HD]) : nil
        bo = config.useBias ? try weights.tensor(prefix + "o_proj.bias", shape: [model]) : nil
        u = try weights.tensor(prefix + "u", shape: [heads, headDim])
        vBias = try weights.tensor(prefix + "v", shape: [heads, headDim])
    }

    public var inputSize: Int { model }
    public var outputSize: Int { model }
    public var stateSpecs: [StateSpec] {
        [StateSpec(name: "mem", perRow: [memLen, model]), StateSpec(name: "mem_seg", perRow: [memLen], initial: consistent ? XLCore.emptySlot : -1,
                   resetValue: consistent ? XLCore.emptySlot : 0)]
            + axonLayers.flatMap(\.stateSpecs)
    }
    /// Segment id of a memory slot never written (consistent math): no token gets it,
    /// so such slots are never attended. Exact in float32.
    static let emptySlot: Float = -16_777_216
    var axonLayers: [AxonLayer] { [axonQ, axonK, axonV].compactMap { $0 } }
    public var parameterCount: Int {
        [wr, wo, u, vBias].reduce(0) { $0 + $1.count } + [wq, wk, wv, bq, bk, bv, bo].reduce(0) { $0 + ($1?.count ?? 0) }
            + axonLayers.reduce(0) { $0 + $1.parameterCount }
    }

    /// `_relative_positions(L)`: sinusoids of positions L−1 … 0, [L, d_model].
    func relativePositions(_ L: Int, into p: UnsafeMutablePointer<Float>) {
        let d = model, half = (d + 1) / 2
        for l in 0..<L {
            let pos = Float(L - 1 - l)
            for j in 0..<half {
                let invFreq = 1 / powf(10000, Float(2 * j) / Float(d))
                let a = pos * invFreq
                if j < d { p[l * d + j] = sinf(a) }
                if half + j < d { p[l * d + half + j] = cosf(a) }
            }
        }
    }

    public func run(
        x: UnsafePointer<Float>, y: UnsafeMutablePointer<Float>,
        batch: Int, time: Int,
        state: StateSlots, resets: UnsafePointer<UInt8>?, arena: Arena
    ) throws {
        let B = batch, T = time, d = model, NH = heads, D = headDim, HD = NH * D, M = memLen, L = M + T
        guard B > 0, T > 0 else { return }
        let s0 = state.startIndex
        let mem = state[s0], memSeg = state[s0 + 1]
        // Keys and values cover [memory; inputs] for every row; segment ids continue from
        // the memory's last one and advance at each reset.
        let xkv = try arena.take(B * L * d), seg = try arena.take(B * L)
        for b in 0..<B {
            (xkv + b * L * d).update(from: mem + b * M * d, count: M * d)
            (xkv + b * L * d + M * d).update(from: x + b * T * d, count: T * d)
            let sb = seg + b * L
            sb.update(from: memSeg + b * M, count: M)
            var id: Float = M > 0 ? memSeg[b * M + M - 1] : 0
            if consistent && id == XLCore.emptySlot { id = -1 }  // continue as the reference numbers
            for t in 0..<T {
                if let resets, resets[b * T + t] != 0 { id += 1 }
                sb[M + t] = id
            }
        }
        let q = try arena.take(B * T * HD), k = try arena.take(B * L * HD), v = try arena.take(B * L * HD)
        if let axonQ, let axonK, let axonV {
            var slot = s0 + 2
            let n = axonQ.stateSpecs.count
            try axonQ.run(x: x, y: q, batch: B, time: T, state: state[slot..<(slot + n)], resets: resets, arena: arena)
            slot += n
            // K/V replay the memory: reset at its start and at every segment change.
            let kvResets = try arena.takeBytes(B * L)
            for b in 0..<B {
                for l in 0..<L { kvResets[b * L + l] = l == 0 || seg[b * L + l] != seg[b * L + l - 1] ? 1 : 0 }
            }
            for (layer, out) in [(axonK, k), (axonV, v)] {
                try layer.run(x: xkv, y: out, batch: B, time: L, state: state[slot..<(slot + n)],
                              resets: UnsafePointer(kvResets), arena: arena)
                slot += n
            }
        } else if let wq, let wk, let wv {
            BLAS.linear(m: B * T, n: HD, k: d, a: x, lda: d, weight: wq.data, c: q, ldc: HD)
            BLAS.linear(m: B * L, n: HD, k: d, a: xkv, lda: d, weight: wk.data, c: k, ldc: HD)
            BLAS.linear(m: B * L, n: HD, k: d, a: xkv, lda: d, weight: wv.data, c: v, ldc: HD)
            if let bq { Vec.addRows(q, rows: B * T, bq.data, HD) }
            if let bk { Vec.addRows(k, rows: B * L, bk.data, HD) }
            if let bv { Vec.addRows(v, rows: B * L, bv.data, HD) }
        }
        // Relative position projections, shared by the batch.
        let pos = try arena.take(L * d), r = try arena.take(L * HD)
        relativePositions(L, into: pos)
        BLAS.linear(m: L, n: HD, k: d, a: pos, lda: d, weight: wr.data, c: r, ldc: HD)
        let ac = try arena.take(T * L), bd = try arena.take(T * L)
        let ctx = try arena.take(B * T * HD)
        let scale = Float(pow(Double(D), -0.5))
        let qu = try arena.take(T * D), qv = try arena.take(T * D)
        for b in 0..<B {
            let kb = k + b * L * HD, vb = v + b * L * HD, sb = seg + b * L
            for h in 0..<NH {
                let uh = u.data + h * D, vh = vBias.data + h * D
                for t in 0..<T {
                    let qt = q + (b * T + t) * HD + h * D
                    for j in 0..<D { qu[t * D + j] = qt[j] + uh[j]; qv[t * D + j] = qt[j] + vh[j] }
                }
                // (q+u)·kᵀ and (q+v)·rᵀ for every (t, l): two small GEMMs per head.
                BLAS.gemm(transB: true, m: T, n: L, k: D, a: qu, lda: D, b: kb + h * D, ldb: HD, c: ac, ldc: L)
                BLAS.gemm(transB: true, m: T, n: L, k: D, a: qv, lda: D, b: r + h * D, ldb: HD, c: bd, ldc: L)
                for t in 0..<T {
                    let row = ac + t * L  // becomes this query's attention weights
                    var mx = -Float.greatestFiniteMagnitude
                    // Consistent math: the window step mode sees (mem_len earlier tokens and
                    // the query itself), and never a slot that was not written.
                    let first = consistent ? t : 0
                    for l in 0..<L {
                        // _rel_shift: element (t, l) of the shifted matrix comes from the
                        // zero-padded [T, L+1] matrix at flat index T + t·L + l.
                        let idx = T + t * L + l, src = idx / (L + 1), col = idx % (L + 1)
                        let shifted: Float = col == 0 ? 0 : bd[src * L + col - 1]
                        // Never-written slots (consistent math) carry an id no token gets.
                        let allowed = l >= first && l <= M + t && sb[l] == sb[M + t]
                        let logit = allowed ? (row[l] + shifted) * scale : -Float.greatestFiniteMagnitude
                        row[l] = logit
                        mx = max(mx, logit)
                    }
                    var sum: Float = 0
                    for l in 0..<L { row[l] = expf(row[l] - mx); sum += row[l] }
                    let inv = 1 / sum
                    for l in 0..<L { row[l] *= inv }
                }
                // Context = attention · V for this head.
                BLAS.gemm(m: T, n: D, k: L, a: ac, lda: L, b: vb + h * D, ldb: HD,
                          c: ctx + b * T * HD + h * D, ldc: HD)
            }
            // Roll the memory: the last mem_len of [memory; inputs] and their segment ids.
            if M > 0 {
                (mem + b * M * d).update(from: xkv + b * L * d + (L - M) * d, count: M * d)
                (memSeg + b * M).update(from: sb + (L - M), count: M)
            }
        }
        BLAS.linear(m: B * T, n: d, k: HD, a: ctx, lda: HD, weight: wo.data, c: y, ldc: d)
        if let bo { Vec.addRows(y, rows: B * T, bo.data, d) }
    }
}
