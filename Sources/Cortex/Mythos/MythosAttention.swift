#if canImport(Glibc)
import Glibc
#endif

/// `precompute_rope_freqs` as cos/sin tables `[max_seq_len, d/2]`: pair k of position m
/// turns by `m · θ^(−2k/d)` (float32, as the reference computes the angles).
struct RopeTable: Sendable {
    let cos: [Float], sin: [Float]
    let half: Int

    init(dim d: Int, maxLen: Int, theta: Double) {
        half = d / 2
        var c = [Float](repeating: 1, count: maxLen * half), s = [Float](repeating: 0, count: maxLen * half)
        let th = Float(theta)
        for k in 0..<half {
            let freq = 1 / powf(th, Float(2 * k) / Float(d))
            for m in 0..<maxLen {
                let angle = Float(m) * freq
                c[m * half + k] = Float(Glibc.cos(Double(angle)))
                s[m * half + k] = Float(Glibc.sin(Double(angle)))
            }
        }
        cos = c; sin = s
    }

    /// Rotate `heads` interleaved pairs `(x₂ₖ, x₂ₖ₊₁)` of every row in place; row r sits at
    /// `x + r·stride` and has position `start + r % time`.
    func apply(_ x: UnsafeMutablePointer<Float>, rows: Int, stride: Int, heads: Int, headStride: Int, time: Int, start: Int) {
        guard half > 0 else { return }
        cos.withUnsafeBufferPointer { cp in
            sin.withUnsafeBufferPointer { sp in
                guard let cb = cp.baseAddress, let sb = sp.baseAddress else { return }
                for r in 0..<rows {
                    let c = cb + (start + r % time) * half, s = sb + (start + r % time) * half
                    for h in 0..<heads {
                        let p = x + r * stride + h * headStride
                        for k in 0..<half {
                            let a = p[2 * k], b = p[2 * k + 1]
                            p[2 * k] = a * c[k] - b * s[k]
                            p[2 * k + 1] = a * s[k] + b * c[k]
                        }
                    }
                }
            }
        }
    }
}


/// One attention layer's cached rows for `batch` sequences: a few streams (GQA: k, v;
/// MLA: c_kv, k_rope and the derived kv_up output), each `[B][capacity][width]`, grown
/// by doubling up to `max_seq_len` tokens.
final class KVLayer: @unchecked Sendable {
    let batch: Int
    let widths: [Int]
    /// Streams from this index on are derived (recomputed from the others; not saved).
    let persistent: Int
    let limit: Int
    private(set) var length = 0
    private(set) var capacity = 0
    private(set) var buffers: [FloatBuffer] = []

    init(batch: Int, widths: [Int], persistent: Int, limit: Int) {
        self.batch = batch
        self.widths = widths
        self.persistent = persistent
        self.limit = limit
    }

    /// Room for `n` rows per sequence (keeps the rows held).
    func reserve(_ n: Int) throws {
        guard n > capacity else { return }
        guard n <= limit else {
            throw CortexError.invalidArgument("the KV cache would hold \(n) tokens, more than max_seq_len \(limit)")
        }
        let cap = min(limit, max(n, capacity * 2, 16))
        var next: [FloatBuffer] = []
        for w in widths {
            next.append(try FloatBuffer(count: try Checked.mul(try Checked.mul(batch, cap, "cache"), w, "cache"), zeroed: false))
        }
        for (i, w) in widths.enumerated() where length > 0 {
            for b in 0..<batch {
                (next[i].pointer + b * cap * w).update(from: buffers[i].pointer + b * capacity * w, count: length * w)
            }
        }
        buffers = next
        capacity = cap
    }

    /// Row `t` of sequence `b` in stream `i`.
    @inline(__always) func row(_ i: Int, _ b: Int, _ t: Int) -> UnsafeMutablePointer<Float> {
        buffers[i].pointer + (b * capacity + t) * widths[i]
    }

    /// Sequence b's rows of stream i start here; consecutive rows are `widths[i]` apart.
    @inline(__always) func base(_ i: Int, _ b: Int) -> UnsafeMutablePointer<Float> { buffers[i].pointer + b * capacity * widths[i] }

    func setLength(_ n: Int) { length = n }
}

/// The attention of a `TransformerBlock`: `GQAttention` or `MLAttention`.
///
/// GQA: q, k, v projections, RoPE on the full head width, each group of
/// `n_heads / n_kv_heads` query heads sharing one key/value head; the cache holds the
/// rotated keys and the values.
///
/// MLA (DeepSeek-V2): q through a low-rank latent (`q_down`, RMSNorm, `q_up_nope` /
/// `q_up_rope`); keys and values from a latent `c_kv` (`kv_down`), whose last
/// `qk_rope_head_dim` channels are a RoPE key shared by all heads; `kv_up(kv_norm(c_kv))`
/// gives each head's non-rotated key and value. The cache holds `c_kv` and the rotated
/// shared key; the kv_up rows are derived (computed once per token, where the reference
/// recomputes them for the whole cache every call).
///
/// Causal: query t of a call sees cached rows and the call's rows up to itself (the
/// reference's mask for a prefill; with a non-empty cache it masks nothing at T = 1 and
/// cannot run T > 1 — Cortex applies the causal rule there too).
struct MythosAttention: Sendable {
    enum Projections: Sendable {
        case gqa(wq: Linear, wk: Linear, wv: Linear)
        case mla(qDown: Linear, qNorm: Tensor, qUpNope: Linear, qUpRope: Linear, kvDown: Linear, kvNorm: Tensor, kvUp: Linear)
    }
    let proj: Projections
    let wo: Linear
    let heads: Int, kvHeads: Int
    let qkDim: Int       // per head: GQA head_dim; MLA nope + rope
    let nope: Int, rope: Int, vDim: Int, rank: Int
    let scale: Float

    init(_ w: WeightSource, _ p: String, _ c: MythosConfig) throws {
        heads = c.nHeads
        switch c.attention {
        case .gqa:
            let hd = c.headDim
            kvHeads = c.nKVHeads
            qkDim = hd; nope = 0; rope = hd; vDim = hd; rank = 0
            proj = .gqa(wq: try Linear(w, p + "wq", in: c.dim, out: heads * hd, bias: false),
                        wk: try Linear(w, p + "wk", in: c.dim, out: kvHeads * hd, bias: false),
                        wv: try Linear(w, p + "wv", in: c.dim, out: kvHeads * hd, bias: false))
            wo = try Linear(w, p + "wo", in: heads * hd, out: c.dim, bias: false)
        case .mla:
            kvHeads = heads
            nope = c.qkNopeHeadDim; rope = c.qkRopeHeadDim; vDim = c.vHeadDim; rank = c.kvLoraRank
            qkDim = nope + rope
            proj = .mla(qDown: try Linear(w, p + "q_down", in: c.dim, out: c.qLoraRank, bias: false),
                        qNorm: try w.tensor(p + "q_norm.weight", shape: [c.qLoraRank]),
                        qUpNope: try Linear(w, p + "q_up_nope", in: c.qLoraRank, out: heads * nope, bias: false),
                        qUpRope: try Linear(w, p + "q_up_rope", in: c.qLoraRank, out: heads * rope, bias: false),
                        kvDown: try Linear(w, p + "kv_down", in: c.dim, out: rank + rope, bias: false),
                        kvNorm: try w.tensor(p + "kv_norm.weight", shape: [rank]),
                        kvUp: try Linear(w, p + "kv_up", in: rank, out: heads * (nope + vDim), bias: false))
            wo = try Linear(w, p + "wo", in: heads * vDim, out: c.dim, bias: false)
        }
        scale = Float(pow(Double(qkDim), -0.5))
    }

    var parameterCount: Int {
        switch proj {
        case .gqa(let q, let k, let v): return q.parameterCount + k.parameterCount + v.parameterCount + wo.parameterCount
        case .mla(let a, let n1, let b, let c2, let d, let n2, let e):
            return [a, b, c2, d, e, wo].reduce(0) { $0 + $1.parameterCount } + n1.count + n2.count
        }
    }

    /// A cache layer shaped for this attention.
    func makeLayer(batch: Int, limit: Int) -> KVLayer {
        switch proj {
        case .gqa: return KVLayer(batch: batch, widths: [kvHeads * qkDim, kvHeads * vDim], persistent: 2, limit: limit)
        case .mla: return KVLayer(batch: batch, widths: [rank, rope, heads * (nope + vDim)], persistent: 2, limit: limit)
        }
    }

    /// Recompute an MLA layer's derived kv_up rows `from..<length` (after a restore).
    func rebuildDerived(_ layer: KVLayer, from: Int, arena: Arena) throws {
        guard case .mla(_, _, _, _, _, let kvNorm, let kvUp) = proj, layer.length > from else { return }
        let n = layer.length - from
        let tmp = try arena.take(n * rank)
        for b in 0..<layer.batch {
            tmp.update(from: layer.row(0, b, from), count: n * rank)
            Kernels.rmsNorm(tmp, rows: n, n: rank, weight: kvNorm.data, eps: 1e-6)
            kvUp.apply(tmp, rows: n, into: layer.row(2, b, from))
        }
    }

    /// `y = attn(x)` for `x [B·T, dim]` (rows batch-major) at positions `start…`; appends
    /// this call's keys to `layer` when given (its length grows by T).
    func forward(_ x: UnsafePointer<Float>, batch B: Int, time T: Int, start: Int, rope table: RopeTable,
                 layer: KVLayer?, into y: UnsafeMutablePointer<Float>, arena: Arena) throws {
        let N = B * T, H = heads
        let past = layer?.length ?? 0, S = past + T
        let q = try arena.take(N * H * qkDim)
        // Keys and values: where each sequence's rows live (the cache, or this call's scratch).
        var kBase: (Int) -> UnsafePointer<Float>, vBase: (Int) -> UnsafePointer<Float>
        var kStride: Int, vStride: Int
        var ropeKeys: ((Int) -> UnsafePointer<Float>)? = nil
        switch proj {
        case .gqa(let wq, let wk, let wv):
            let kvw = kvHeads * qkDim
            wq.apply(x, rows: N, into: q)
            table.apply(q, rows: N, stride: H * qkDim, heads: H, headStride: qkDim, time: T, start: start)
            let k = try arena.take(N * kvw), v = try arena.take(N * kvw)
            wk.apply(x, rows: N, into: k)
            wv.apply(x, rows: N, into: v)
            table.apply(k, rows: N, stride: kvw, heads: kvHeads, headStride: qkDim, time: T, start: start)
            if let layer {
                try layer.reserve(S)
                for b in 0..<B {
                    layer.row(0, b, past).update(from: k + b * T * kvw, count: T * kvw)
                    layer.row(1, b, past).update(from: v + b * T * kvw, count: T * kvw)
                }
                layer.setLength(S)
                kBase = { UnsafePointer(layer.base(0, $0)) }
                vBase = { UnsafePointer(layer.base(1, $0)) }
            } else {
                kBase = { UnsafePointer(k + $0 * T * kvw) }
                vBase = { UnsafePointer(v + $0 * T * kvw) }
            }
            kStride = kvw; vStride = kvw
        case .mla(let qDown, let qNorm, let qUpNope, let qUpRope, let kvDown, let kvNorm, let kvUp):
            // q = [q_nope | rope(q_rope)] per head, stored head-major in `q`.
            let qr = qDown.outFeatures
            let cq = try arena.take(N * qr)
            qDown.apply(x, rows: N, into: cq)
            Kernels.rmsNorm(cq, rows: N, n: qr, weight: qNorm.data, eps: 1e-6)
            let qn = try arena.take(N * H * nope), qp = try arena.take(N * H * rope)
            qUpNope.apply(cq, rows: N, into: qn)
            qUpRope.apply(cq, rows: N, into: qp)
            table.apply(qp, rows: N, stride: H * rope, heads: H, headStride: rope, time: T, start: start)
            for n in 0..<N {
                for h in 0..<H {
                    (q + (n * H + h) * qkDim).update(from: qn + (n * H + h) * nope, count: nope)
                    (q + (n * H + h) * qkDim + nope).update(from: qp + (n * H + h) * rope, count: rope)
                }
            }
            let kvw = rank + rope, uw = H * (nope + vDim)
            let raw = try arena.take(N * kvw)
            kvDown.apply(x, rows: N, into: raw)
            table.apply(raw + rank, rows: N, stride: kvw, heads: 1, headStride: rope, time: T, start: start)
            // kv_up(kv_norm(c_kv)) of this call's rows.
            let cn = try arena.take(N * rank), up = try arena.take(N * uw)
            for n in 0..<N { (cn + n * rank).update(from: raw + n * kvw, count: rank) }
            Kernels.rmsNorm(cn, rows: N, n: rank, weight: kvNorm.data, eps: 1e-6)
            kvUp.apply(cn, rows: N, into: up)
            if let layer {
                try layer.reserve(S)
                for b in 0..<B {
                    for t in 0..<T {
                        let src = raw + (b * T + t) * kvw
                        layer.row(0, b, past + t).update(from: src, count: rank)
                        layer.row(1, b, past + t).update(from: src + rank, count: rope)
                    }
                    layer.row(2, b, past).update(from: up + b * T * uw, count: T * uw)
                }
                layer.setLength(S)
                kBase = { UnsafePointer(layer.base(2, $0)) }
                ropeKeys = { UnsafePointer(layer.base(1, $0)) }
                kStride = uw
            } else {
                // Rotated keys compacted to [N, rope] (stride `rope`, as in the cache).
                let kr = try arena.take(max(N * rope, 1))
                for n in 0..<N { (kr + n * rope).update(from: raw + n * kvw + rank, count: rope) }
                kBase = { UnsafePointer(up + $0 * T * uw) }
                ropeKeys = { UnsafePointer(kr + $0 * T * self.rope) }
                kStride = uw
            }
            vBase = { kBase($0) + self.nope }
            vStride = uw
        }
        // Scores and context per (sequence, head); pairs split over the threads.
        let ctxWidth = H * vDim
        let ctx = try arena.take(N * ctxWidth)
        let parts = B * H > 1 && B * H * T * S * qkDim >= 65_536 ? 2 : 1
        let scoresAll = try arena.take(parts * T * S)
        let group = H / kvHeads, qkd = qkDim, nope = nope, rope = rope, vDim = vDim, scale = scale
        let isMLA: Bool = { if case .mla = proj { return true } else { return false } }()
        Parallel.run(parts: parts) { part, parts in
            let sc = scoresAll + part * T * S
            for pair in Parallel.slice(B * H, part: part, parts: parts, align: 1) {
                let b = pair / H, h = pair % H
                let vh = isMLA ? vBase(b) + h * (nope + vDim) : vBase(b) + (h / group) * vDim
                // Queries in blocks of 32: block [t0, t1) only needs the first S − T + t1
                // keys (causal), so a prefill computes about half the score matrix.
                var t0 = 0
                while t0 < T {
                    let t1 = min(T, t0 + 32), rows = t1 - t0, keys = S - T + t1
                    let qh = q + (b * T + t0) * H * qkd + h * qkd
                    if isMLA {
                        let kb = kBase(b) + h * (nope + vDim)
                        if nope > 0 {
                            BLAS.product(transB: true, m: rows, n: keys, k: nope, a: qh, lda: H * qkd, b: kb, ldb: kStride,
                                           c: sc, ldc: S)
                        }
                        if rope > 0, let rk = ropeKeys {
                            BLAS.product(transB: true, m: rows, n: keys, k: rope, a: qh + nope, lda: H * qkd, b: rk(b),
                                           ldb: rope, c: sc, ldc: S, beta: nope > 0 ? 1 : 0)
                        }
                    } else {
                        let kh = kBase(b) + (h / group) * qkd
                        BLAS.product(transB: true, m: rows, n: keys, k: qkd, a: qh, lda: H * qkd, b: kh, ldb: kStride,
                                       c: sc, ldc: S)
                    }
                    // Scale, causal mask (query t sees rows ≤ past + t), softmax (SIMD exp).
                    for r in 0..<rows {
                        let row = sc + r * S, visible = S - T + t0 + r + 1
                        Kernels.softmax(row, rows: 1, n: visible, scale: scale)
                        if visible < keys { (row + visible).update(repeating: 0, count: keys - visible) }
                    }
                    BLAS.product(m: rows, n: vDim, k: keys, a: sc, lda: S, b: vh, ldb: vStride,
                                   c: ctx + (b * T + t0) * ctxWidth + h * vDim, ldc: ctxWidth)
                    t0 = t1
                }
            }
        }
        wo.apply(ctx, rows: N, into: y)
    }
}
