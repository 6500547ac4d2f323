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
/// MLA: c_kv, k_rope and the derived kv_up output), up to `max_seq_len` tokens.
///
/// Rows live in pages of `pageTokens` tokens, one `PagePool` per stream; each sequence
/// has a block table per stream (its page j holds tokens j·P ..< (j+1)·P). Growing
/// never copies rows, and `fork()` makes a layer that shares every page: a page is
/// copied only when one side writes into a page the other still holds (copy-on-write;
/// in decoding, only the last, partly filled page of a shared prefix).
public final class KVLayer: @unchecked Sendable {
    let batch: Int
    let widths: [Int]
    /// Streams from this index on are derived (recomputed from the others; not saved).
    let persistent: Int
    let limit: Int
    let pageTokens: Int
    let pools: [PagePool]
    private(set) var length = 0

    struct Page { let index: Int; let pointer: UnsafeMutablePointer<Float> }
    /// [stream][sequence] -> pages in token order.
    private var tables: [[[Page]]]

    /// A contiguous run of one sequence's rows: tokens `start ..< start + count`.
    struct Segment { let pointer: UnsafePointer<Float>; let start: Int; let count: Int }

    public static let defaultPageTokens = 64

    init(batch: Int, widths: [Int], persistent: Int, limit: Int, pageTokens: Int = KVLayer.defaultPageTokens) throws {
        guard pageTokens >= 1 else { throw CortexError.invalidArgument("page_tokens must be >= 1, got \(pageTokens)") }
        self.batch = batch
        self.widths = widths
        self.persistent = persistent
        self.limit = limit
        self.pageTokens = pageTokens
        pools = try widths.map { try PagePool(pageFloats: pageTokens * max($0, 1), maxPages: Int(Int32.max)) }
        tables = Array(repeating: Array(repeating: [], count: batch), count: widths.count)
    }

    private init(forking l: KVLayer) {
        batch = l.batch; widths = l.widths; persistent = l.persistent; limit = l.limit; pageTokens = l.pageTokens
        pools = l.pools
        tables = l.tables
        length = l.length
        for (i, t) in tables.enumerated() { for seq in t { for p in seq { pools[i].retain(p.index) } } }
    }

    deinit { for (i, t) in tables.enumerated() { for seq in t { for p in seq { pools[i].release(p.index) } } } }

    /// A layer sharing every page with this one (copy-on-write).
    func fork() -> KVLayer { KVLayer(forking: self) }

    /// Pages for `n` tokens per sequence (keeps the rows held).
    func reserve(_ n: Int) throws {
        guard n <= limit else {
            throw CortexError.invalidArgument("the KV cache would hold \(n) tokens, more than max_seq_len \(limit)")
        }
        let need = (n + pageTokens - 1) / pageTokens
        for i in widths.indices {
            for b in 0..<batch {
                while tables[i][b].count < need {
                    let index = try pools[i].allocate()
                    tables[i][b].append(Page(index: index, pointer: pools[i].pointer(index)))
                }
            }
        }
    }

    /// Pages held by this layer and how many of them it shares with a fork.
    var pageCounts: (held: Int, shared: Int) {
        var held = 0, shared = 0
        for (i, t) in tables.enumerated() {
            for seq in t { for p in seq { held += 1; if pools[i].isShared(p.index) { shared += 1 } } }
        }
        return (held, shared)
    }

    /// Page j of (stream i, sequence b), copied first if another layer holds it too.
    private func writable(_ i: Int, _ b: Int, _ j: Int) throws -> UnsafeMutablePointer<Float> {
        let page = tables[i][b][j]
        guard pools[i].isShared(page.index) else { return page.pointer }
        let index = try pools[i].allocate()
        let fresh = Page(index: index, pointer: pools[i].pointer(index))
        fresh.pointer.update(from: page.pointer, count: pools[i].pageFloats)
        pools[i].release(page.index)
        tables[i][b][j] = fresh
        return fresh.pointer
    }

    /// Write rows `t0 ..< t0 + n` of (stream i, sequence b) from `src` (row r at
    /// `src + r·srcStride`; default: contiguous). Pages must be reserved.
    func write(_ i: Int, _ b: Int, at t0: Int, rows n: Int, from src: UnsafePointer<Float>, srcStride: Int? = nil) throws {
        let w = widths[i], stride = srcStride ?? w
        var t = t0
        while t < t0 + n {
            let j = t / pageTokens, off = t % pageTokens, run = min(pageTokens - off, t0 + n - t)
            let dst = try writable(i, b, j) + off * w
            if stride == w {
                dst.update(from: src + (t - t0) * w, count: run * w)
            } else {
                for r in 0..<run { (dst + r * w).update(from: src + (t - t0 + r) * stride, count: w) }
            }
            t += run
        }
    }

    /// Copy rows `t0 ..< t0 + n` of (stream i, sequence b) to `dst`, contiguous.
    func read(_ i: Int, _ b: Int, from t0: Int, rows n: Int, into dst: UnsafeMutablePointer<Float>) {
        let w = widths[i]
        var t = t0
        while t < t0 + n {
            let j = t / pageTokens, off = t % pageTokens, run = min(pageTokens - off, t0 + n - t)
            (dst + (t - t0) * w).update(from: tables[i][b][j].pointer + off * w, count: run * w)
            t += run
        }
    }

    /// Sequence b's first `n` rows of stream i, page by page.
    func segments(_ i: Int, _ b: Int, upTo n: Int) -> [Segment] {
        var out: [Segment] = []
        var start = 0
        for p in tables[i][b] where start < n {
            out.append(Segment(pointer: p.pointer, start: start, count: min(pageTokens, n - start)))
            start += pageTokens
        }
        return out
    }

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
/// shared key; derived from them (computed once per token, where the reference
/// recomputes them for the whole cache every call, and not saved) are the kv_up rows,
/// read by prefills, and the normalised latent rows `kv_norm(c_kv)`, read by decoding
/// through the absorbed form (`attendAbsorbed`).
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
    /// MLA: kv_up's rows split per head, `[H·nope, rank]` (keys) and `[H·v, rank]`
    /// (values), for the absorbed form; nil for GQA or an INT8 kv_up.
    let absorbK: Tensor?, absorbV: Tensor?

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
            absorbK = nil; absorbV = nil
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
            if case .mla(_, _, _, _, _, _, let kvUp) = proj, let up = kvUp.weight {
                let k = try Tensor(zeros: [heads * nope, rank]), v = try Tensor(zeros: [heads * vDim, rank])
                for h in 0..<heads {
                    let rows = up.data + h * (nope + vDim) * rank
                    (k.data + h * nope * rank).update(from: rows, count: nope * rank)
                    (v.data + h * vDim * rank).update(from: rows + nope * rank, count: vDim * rank)
                }
                absorbK = k; absorbV = v
            } else {
                absorbK = nil; absorbV = nil
            }
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
    func makeLayer(batch: Int, limit: Int, pageTokens: Int) throws -> KVLayer {
        switch proj {
        case .gqa:
            return try KVLayer(batch: batch, widths: [kvHeads * qkDim, kvHeads * vDim], persistent: 2, limit: limit, pageTokens: pageTokens)
        case .mla:
            return try KVLayer(batch: batch, widths: [rank, rope, heads * (nope + vDim), rank], persistent: 2, limit: limit,
                               pageTokens: pageTokens)
        }
    }

    /// Recompute an MLA layer's derived rows `from..<length` (after a restore): kv_up
    /// rows and the normalised latent rows.
    func rebuildDerived(_ layer: KVLayer, from: Int, arena: Arena) throws {
        guard case .mla(_, _, _, _, _, let kvNorm, let kvUp) = proj, layer.length > from else { return }
        let n = layer.length - from
        let tmp = try arena.take(n * rank), up = try arena.take(n * layer.widths[2])
        for b in 0..<layer.batch {
            layer.read(0, b, from: from, rows: n, into: tmp)
            Kernels.rmsNorm(tmp, rows: n, n: rank, weight: kvNorm.data, eps: 1e-6)
            kvUp.apply(tmp, rows: n, into: up)
            try layer.write(2, b, at: from, rows: n, from: up)
            try layer.write(3, b, at: from, rows: n, from: tmp)
        }
    }

    /// `y = attn(x)` for `x [B·T, dim]` (rows batch-major) at positions `start…`; appends
    /// this call's keys to `layer` when given (its length grows by T).
    func forward(_ x: UnsafePointer<Float>, batch B: Int, time T: Int, start: Int, rope table: RopeTable,
                 layer: KVLayer?, into y: UnsafeMutablePointer<Float>, arena: Arena) throws {
        let N = B * T, H = heads
        let past = layer?.length ?? 0, S = past + T
        let q = try arena.take(N * H * qkDim)
        // Keys and values: where each sequence's rows live (the cache's pages, or this
        // call's scratch as one segment), with their row strides.
        var kSegs: [[KVLayer.Segment]], vSegs: [[KVLayer.Segment]], ropeSegs: [[KVLayer.Segment]] = []
        var latentSegs: [[KVLayer.Segment]] = []  // MLA: kv_norm(c_kv) rows
        var kStride: Int, vStride: Int
        var vOffset = 0   // MLA: values follow the nope keys in each kv_up row
        func one(_ p: UnsafePointer<Float>) -> [KVLayer.Segment] { [KVLayer.Segment(pointer: p, start: 0, count: S)] }
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
                    try layer.write(0, b, at: past, rows: T, from: k + b * T * kvw)
                    try layer.write(1, b, at: past, rows: T, from: v + b * T * kvw)
                }
                layer.setLength(S)
                kSegs = (0..<B).map { layer.segments(0, $0, upTo: S) }
                vSegs = (0..<B).map { layer.segments(1, $0, upTo: S) }
            } else {
                kSegs = (0..<B).map { one(k + $0 * T * kvw) }
                vSegs = (0..<B).map { one(v + $0 * T * kvw) }
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
                    try layer.write(0, b, at: past, rows: T, from: raw + b * T * kvw, srcStride: kvw)
                    try layer.write(1, b, at: past, rows: T, from: raw + b * T * kvw + rank, srcStride: kvw)
                    try layer.write(2, b, at: past, rows: T, from: up + b * T * uw)
                    try layer.write(3, b, at: past, rows: T, from: cn + b * T * rank)
                }
                layer.setLength(S)
                kSegs = (0..<B).map { layer.segments(2, $0, upTo: S) }
                ropeSegs = (0..<B).map { layer.segments(1, $0, upTo: S) }
                latentSegs = (0..<B).map { layer.segments(3, $0, upTo: S) }
            } else {
                // Rotated keys compacted to [N, rope] (stride `rope`, as in the cache).
                let kr = try arena.take(max(N * rope, 1))
                for n in 0..<N { (kr + n * rope).update(from: raw + n * kvw + rank, count: rope) }
                kSegs = (0..<B).map { one(up + $0 * T * uw) }
                ropeSegs = (0..<B).map { one(kr + $0 * T * self.rope) }
                latentSegs = (0..<B).map { one(cn + $0 * T * self.rank) }
            }
            kStride = uw
            vSegs = kSegs
            vOffset = nope
            vStride = uw
        }
        let ctxWidth = H * vDim
        let ctx = try arena.take(N * ctxWidth)
        if T < 16, nope > 0, rope > 0, let wk = absorbK, let wv = absorbV {
            try attendAbsorbed(q: q, batch: B, time: T, keys: S, latent: latentSegs, ropeKeys: ropeSegs, wk: wk, wv: wv,
                               into: ctx, arena: arena)
            wo.apply(ctx, rows: N, into: y)
            return
        }
        // Scores and context per (sequence, head); pairs split over the threads.
        let parts = Parallel.parts(work: B * H * T * S * qkDim, grain: 32_768, items: T == 1 && H / kvHeads > 1 ? B * kvHeads : B * H)
        let group = H / kvHeads, qkd = qkDim, nope = nope, rope = rope, vDim = vDim, scale = scale
        let isMLA: Bool = { if case .mla = proj { return true } else { return false } }()
        if !isMLA, T == 1, group > 1 {
            // One token per sequence (decoding): the `group` query heads sharing a key/value
            // head are consecutive rows of q and of ctx, so each (sequence, kv head) is one
            // product of `group` rows over the shared keys, read once instead of per head.
            let scoresAll = try arena.take(parts * group * S)
            Parallel.run(parts: parts) { part, parts in
                let sc = scoresAll + part * group * S
                for pair in Parallel.slice(B * kvHeads, part: part, parts: parts, align: 1) {
                    let b = pair / kvHeads, g = pair % kvHeads
                    let qg = q + (b * H + g * group) * qkd, out = ctx + b * ctxWidth + g * group * vDim
                    for seg in kSegs[b] {
                        BLAS.product(transB: true, m: group, n: seg.count, k: qkd, a: qg, lda: qkd, b: seg.pointer + g * qkd,
                                     ldb: kStride, c: sc + seg.start, ldc: S)
                    }
                    Kernels.softmax(sc, rows: group, n: S, scale: scale)
                    for (j, seg) in vSegs[b].enumerated() {
                        BLAS.product(m: group, n: vDim, k: seg.count, a: sc + seg.start, lda: S, b: seg.pointer + g * vDim,
                                     ldb: vStride, c: out, ldc: vDim, beta: j == 0 ? 0 : 1)
                    }
                }
            }
            wo.apply(ctx, rows: N, into: y)
            return
        }
        let scoresAll = try arena.take(parts * T * S)
        // MLA prefill: each head's keys [k_nope | k_rope] gathered once into [S, nope + rope]
        // rows, so a score block is one product with k = nope + rope instead of two thin
        // ones. Decoding (small T) reads the pages in place: gathering S rows per token
        // would cost more than it saves.
        var joined: UnsafeMutablePointer<Float>? = nil
        if isMLA, nope > 0, rope > 0, T >= 16 {
            let kj = try arena.take(B * H * S * qkDim)
            for b in 0..<B {
                for (seg, rseg) in zip(kSegs[b], ropeSegs[b]) {
                    for r in 0..<seg.count {
                        let t = seg.start + r, rk = rseg.pointer + r * rope
                        for h in 0..<H {
                            let dst = kj + ((b * H + h) * S + t) * qkDim
                            dst.update(from: seg.pointer + r * kStride + h * (nope + vDim), count: nope)
                            (dst + nope).update(from: rk, count: rope)
                        }
                    }
                }
            }
            joined = kj
        }
        Parallel.run(parts: parts) { part, parts in
            let sc = scoresAll + part * T * S
            for pair in Parallel.slice(B * H, part: part, parts: parts, align: 1) {
                let b = pair / H, h = pair % H
                let vHead = isMLA ? h * (nope + vDim) + vOffset : (h / group) * vDim
                // Queries in blocks of 32: block [t0, t1) only needs the first S − T + t1
                // keys (causal), so a prefill computes about half the score matrix. Keys
                // come page by page: each page's scores land in their columns of `sc`.
                var t0 = 0
                while t0 < T {
                    let t1 = min(T, t0 + 32), rows = t1 - t0, keys = S - T + t1
                    let qh = q + (b * T + t0) * H * qkd + h * qkd
                    if let kj = joined {
                        BLAS.product(transB: true, m: rows, n: keys, k: qkd, a: qh, lda: H * qkd,
                                     b: kj + (b * H + h) * S * qkd, ldb: qkd, c: sc, ldc: S)
                    } else {
                        for (j, seg) in kSegs[b].enumerated() where seg.start < keys {
                            let n = min(seg.count, keys - seg.start), c = sc + seg.start
                            if isMLA {
                                let kb = seg.pointer + h * (nope + vDim)
                                if nope > 0 {
                                    BLAS.product(transB: true, m: rows, n: n, k: nope, a: qh, lda: H * qkd, b: kb, ldb: kStride,
                                                 c: c, ldc: S)
                                }
                                if rope > 0 {
                                    BLAS.product(transB: true, m: rows, n: n, k: rope, a: qh + nope, lda: H * qkd,
                                                 b: ropeSegs[b][j].pointer, ldb: rope, c: c, ldc: S, beta: nope > 0 ? 1 : 0)
                                }
                            } else {
                                BLAS.product(transB: true, m: rows, n: n, k: qkd, a: qh, lda: H * qkd,
                                             b: seg.pointer + (h / group) * qkd, ldb: kStride, c: c, ldc: S)
                            }
                        }
                    }
                    // Scale, causal mask (query t sees rows ≤ past + t), softmax (SIMD exp).
                    for r in 0..<rows {
                        let row = sc + r * S, visible = S - T + t0 + r + 1
                        Kernels.softmax(row, rows: 1, n: visible, scale: scale)
                        if visible < keys { (row + visible).update(repeating: 0, count: keys - visible) }
                    }
                    let out = ctx + (b * T + t0) * ctxWidth + h * vDim
                    for (j, seg) in vSegs[b].enumerated() where seg.start < keys {
                        BLAS.product(m: rows, n: vDim, k: min(seg.count, keys - seg.start), a: sc + seg.start, lda: S,
                                     b: seg.pointer + vHead, ldb: vStride, c: out, ldc: ctxWidth, beta: j == 0 ? 0 : 1)
                    }
                    t0 = t1
                }
            }
        }
        wo.apply(ctx, rows: N, into: y)
    }

    /// MLA attention of a few query rows (decoding) in the absorbed form (DeepSeek-V2):
    /// `q_nope·(W_uk c) = (W_ukᵀ q_nope)·c` and `Σ p·(W_uv c) = W_uv·(Σ p c)`, so the
    /// heads score against the shared latent rows `c = kv_norm(c_kv)` (rank floats per
    /// token, plus the shared rope key) in one product of `T·heads` rows, instead of
    /// reading each head's kv_up row (`H·(nope + v)` floats per token) with one thin
    /// product per head and page. Same sums in another order (~1e-7 relative). Work is
    /// split over the threads by sequence, or for one token by head.
    private func attendAbsorbed(q: UnsafePointer<Float>, batch B: Int, time T: Int, keys S: Int,
                                latent: [[KVLayer.Segment]], ropeKeys: [[KVLayer.Segment]], wk: Tensor, wv: Tensor,
                                into ctx: UnsafeMutablePointer<Float>, arena: Arena) throws {
        let H = heads, R = rank, ctxWidth = H * vDim
        let nope = nope, rope = rope, vDim = vDim, qkd = qkDim, scale = scale
        let perPart = 2 * T * H * R + T * H * S
        // One token per sequence: heads in fixed chunks of `chunk` (a quarter of them), so
        // even one sequence splits over threads, and every product has the same rows
        // whatever the split (BLAS results may depend on a product's row count). Longer
        // inputs: whole sequences per part.
        let chunk = (H + 3) / 4, chunks = (H + chunk - 1) / chunk
        let parts = Parallel.parts(work: B * T * H * S * (2 * R + rope), grain: 16_384, items: T == 1 ? B * chunks : B)
        let scratch = try arena.take(parts * perPart)
        // Heads h0 ..< h1 of sequence b; rows t·nh + (h − h0). With T > 1 a part takes
        // whole sequences (the query rows t·H + h are then contiguous only for all heads).
        func attend(_ b: Int, _ h0: Int, _ h1: Int, _ qp: UnsafeMutablePointer<Float>) {
            let nh = h1 - h0, M = T * nh, u = qp + M * R, sc = u + M * R
            let qb = q + b * T * H * qkd  // row t·H + h: query t, head h (stride qkDim)
            for h in h0..<h1 {  // q'_h = q_nope_h · W_uk_h
                BLAS.product(m: T, n: R, k: nope, a: qb + h * qkd, lda: H * qkd, b: wk.data + h * nope * R, ldb: R,
                             c: qp + (h - h0) * R, ldc: nh * R)
            }
            for (seg, rseg) in zip(latent[b], ropeKeys[b]) {
                BLAS.product(transB: true, m: M, n: seg.count, k: R, a: qp, lda: R, b: seg.pointer, ldb: R,
                             c: sc + seg.start, ldc: S)
                BLAS.product(transB: true, m: M, n: seg.count, k: rope, a: qb + h0 * qkd + nope, lda: qkd, b: rseg.pointer,
                             ldb: rope, c: sc + seg.start, ldc: S, beta: 1)
            }
            // Scale, causal mask (query t sees keys ≤ S − T + t), softmax.
            for r in 0..<M {
                let row = sc + r * S, visible = S - T + r / nh + 1
                Kernels.softmax(row, rows: 1, n: visible, scale: scale)
                if visible < S { (row + visible).update(repeating: 0, count: S - visible) }
            }
            for (j, seg) in latent[b].enumerated() {  // u = Σ_s p_s c_s
                BLAS.product(m: M, n: R, k: seg.count, a: sc + seg.start, lda: S, b: seg.pointer, ldb: R, c: u, ldc: R,
                             beta: j == 0 ? 0 : 1)
            }
            for h in h0..<h1 {  // ctx_h = W_uv_h · u_h
                BLAS.product(transB: true, m: T, n: vDim, k: R, a: u + (h - h0) * R, lda: nh * R, b: wv.data + h * vDim * R,
                             ldb: R, c: ctx + b * T * ctxWidth + h * vDim, ldc: ctxWidth)
            }
        }
        Parallel.run(parts: parts) { part, parts in
            let qp = scratch + part * perPart
            if T == 1 {
                for item in Parallel.slice(B * chunks, part: part, parts: parts, align: 1) {
                    let b = item / chunks, h0 = (item % chunks) * chunk
                    attend(b, h0, min(H, h0 + chunk), qp)
                }
            } else {
                for b in Parallel.slice(B, part: part, parts: parts, align: 1) { attend(b, 0, H, qp) }
            }
        }
    }
}
