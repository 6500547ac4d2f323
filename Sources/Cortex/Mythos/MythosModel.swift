import CKernels
#if canImport(Glibc)
import Glibc
#endif

/// open-mythos `TransformerBlock`: pre-norm attention and FFN, each with a residual
/// (`x + attn(norm(x))`, then `x + ffn(norm(x))`); RMSNorm eps 1e-6.
struct MythosBlock: Sendable {
    let attnNorm: Tensor, ffnNorm: Tensor
    let attention: MythosAttention
    /// The FFN: dense SwiGLU (prelude, coda) or the MoE (recurrent block). Two optionals
    /// rather than an enum with payloads, whose spare tag bits valgrind reports as
    /// uninitialised on every copy.
    let dense: SwiGLU?, moe: MoEFFN?

    init(_ w: WeightSource, _ p: String, _ c: MythosConfig, moe: Bool) throws {
        attnNorm = try w.tensor(p + "attn_norm.weight", shape: [c.dim])
        ffnNorm = try w.tensor(p + "ffn_norm.weight", shape: [c.dim])
        attention = try MythosAttention(w, p + "attn.", c)
        self.moe = moe ? try MoEFFN(w, p + "ffn.", c) : nil
        dense = moe ? nil : try SwiGLU(w, p + "ffn.", dim: c.dim, inner: c.denseFFNDim)
    }

    var parameterCount: Int {
        attnNorm.count + ffnNorm.count + attention.parameterCount + (dense?.parameterCount ?? 0) + (moe?.parameterCount ?? 0)
    }

    /// `x ← block(x)` in place for `x [B·T, dim]`.
    func apply(_ x: UnsafeMutablePointer<Float>, batch: Int, time: Int, start: Int, rope: RopeTable,
               layer: KVLayer?, arena: Arena) throws {
        let N = batch * time, D = attnNorm.count
        let h = try arena.take(N * D), o = try arena.take(N * D)
        cxk_add_rmsnorm(x, nil, h, Int32(N), Int32(D), attnNorm.data, 1e-6)  // h = norm(x)
        try attention.forward(h, batch: batch, time: time, start: start, rope: rope, layer: layer, into: o, arena: arena)
        cxk_add_rmsnorm(x, o, h, Int32(N), Int32(D), ffnNorm.data, 1e-6)     // x += o; h = norm(x)
        if let m = moe { try m.apply(h, rows: N, into: o, arena: arena) }
        if let f = dense { try f.apply(h, rows: N, into: o, arena: arena) }
        cxk_rows_axpy(x, nil, o, Int32(N), Int32(D))                          // x += o
    }
}

/// Mirrors open-mythos 0.5.0 `OpenMythos`: a recurrent-depth transformer.
///
///     x = embed(ids);  x = prelude(x);  e = x
///     h = x;  for t < n_loops:
///         c = RMSNorm(h + loop_emb(t) + e)           loop_emb: sinusoid on the first dim/8 channels
///         o = block(c) (attention + MoE);  o += LoRA_t(o)   (scale row min(t, max_loop_iters−1))
///         h = A ⊙ h + B ⊙ e + o                       A = exp(−exp(clamp(log_dt + log_A, ±20)))
///         p = σ(halt(h));  ACT: h_out += w·h, w = p, or the remainder 1 − Σp when Σp + p
///         crosses act_threshold; halted positions add nothing more
///     logits = head(RMSNorm(coda(h_out)))            head tied to embed
///
/// Without a cache the loop stops once every position has halted (as the reference);
/// with one, every loop runs, so later calls find keys at every depth.
public final class MythosModel: Sendable {
    public let config: MythosConfig
    /// The output head `[V, dim]`, packed for the logits product; with tied weights (no
    /// `head.weight` in the file) it is also the embedding table, read row by row.
    let head: PackedMatrix
    /// The embedding `[V, dim]` when the file has its own `head.weight`.
    let untiedEmbed: Tensor?
    let prelude: [MythosBlock], coda: [MythosBlock]
    let block: MythosBlock
    let ltiA: [Float], ltiB: Tensor
    let halt: Linear
    let loraDown: Linear, loraB: Tensor, loraScale: Tensor  // [rank, dim], [max_loop_iters, rank]
    let loopNorm: Tensor, finalNorm: Tensor
    let rope: RopeTable
    /// Scratch arenas of finished calls and freed caches, reused so repeated calls do
    /// not fault in fresh pages (at most a few kept).
    private let arenas = Locked<[Arena]>([])

    func borrowArena() -> Arena {
        let a = arenas.withLock { $0.popLast() } ?? Arena()
        a.reset()
        return a
    }

    func returnArena(_ a: Arena) {
        arenas.withLock { if $0.count < 4 { $0.append(a) } }
    }

    init(config c: MythosConfig, weights w: WeightSource) throws {
        config = c
        let embed = try w.tensor("embed.weight", shape: [c.vocabSize, c.dim])
        if w.has("head.weight") {
            head = try PackedMatrix(try w.tensor("head.weight", shape: [c.vocabSize, c.dim]))
            untiedEmbed = embed
        } else {
            head = try PackedMatrix(embed)
            untiedEmbed = nil
        }
        for name in ["freqs_cis", "freqs_cis_mla"] where w.has(name) { try w.ignore(name) }  // recomputed
        prelude = try (0..<c.preludeLayers).map { try MythosBlock(w, "prelude.\($0).", c, moe: false) }
        coda = try (0..<c.codaLayers).map { try MythosBlock(w, "coda.\($0).", c, moe: false) }
        let r = "recurrent."
        block = try MythosBlock(w, r + "block.", c, moe: true)
        let logA = try w.tensor(r + "injection.log_A", shape: [c.dim]), logDt = try w.tensor(r + "injection.log_dt", shape: [1])
        ltiA = (0..<c.dim).map { expf(-expf(min(max(logDt.data[0] + logA.data[$0], -20), 20))) }
        ltiB = try w.tensor(r + "injection.B", shape: [c.dim])
        halt = try Linear(w, r + "act.halt", in: c.dim, out: 1)
        loraDown = try Linear(w, r + "lora.down", in: c.dim, out: c.loraRank, bias: false)
        loraB = try w.tensor(r + "lora.B", shape: [c.loraRank, c.dim])
        loraScale = try w.tensor(r + "lora.scale.weight", shape: [c.maxLoopIters, c.loraRank])
        loopNorm = try w.tensor(r + "norm.weight", shape: [c.dim])
        finalNorm = try w.tensor("norm.weight", shape: [c.dim])
        rope = RopeTable(dim: c.attention == .mla ? c.qkRopeHeadDim : c.headDim, maxLen: c.maxSeqLen, theta: c.ropeTheta)
    }

    public var parameterCount: Int {
        let blocks = (prelude + coda + [block]).reduce(0) { $0 + $1.parameterCount }
        let tables = (untiedEmbed == nil ? 1 : 2) * config.vocabSize * config.dim
        return tables + blocks + 2 * config.dim + 1 + halt.parameterCount + loraDown.parameterCount
            + loraB.count + loraScale.count + loopNorm.count + finalNorm.count
    }

    /// Where each attention layer of a call keeps its keys (nil: no cache).
    enum LayerKey: Hashable { case prelude(Int), loop(Int), coda(Int) }

    /// Logits `[B·T, V]` (or only each sequence's last row, `[B, V]`, when `lastOnly`) for
    /// token ids `[B·T]` at positions `start…`, appending to `cache` when given.
    func forward(ids: UnsafePointer<Int32>, batch B: Int, time T: Int, loops: Int, start: Int,
                 cache: MythosCache?, lastOnly: Bool, into logits: UnsafeMutablePointer<Float>, arena: Arena) throws {
        let c = config, D = c.dim, N = B * T
        let x = try arena.take(N * D)
        for n in 0..<N {
            if let e = untiedEmbed { (x + n * D).update(from: e.data + Int(ids[n]) * D, count: D) } else { head.copyRow(Int(ids[n]), into: x + n * D) }
        }
        for (i, b) in prelude.enumerated() {
            try b.apply(x, batch: B, time: T, start: start, rope: rope, layer: try cache?.layer(.prelude(i), block: b), arena: arena)
        }
        let out = try recurrent(x, batch: B, time: T, loops: loops, start: start, cache: cache, arena: arena)
        for (i, b) in coda.enumerated() {
            try b.apply(out, batch: B, time: T, start: start, rope: rope, layer: try cache?.layer(.coda(i), block: b), arena: arena)
        }
        // head(norm(x)), for every row or the last of each sequence.
        let rows = lastOnly ? B : N
        let hn = try arena.take(rows * D)
        for r in 0..<rows { (hn + r * D).update(from: out + (lastOnly ? r * T + T - 1 : r) * D, count: D) }
        Kernels.rmsNorm(hn, rows: rows, n: D, weight: finalNorm.data, eps: 1e-6)
        head.apply(m: rows, hn, ldx: D, into: logits, ldy: c.vocabSize)
    }

    /// The recurrent block's loop with ACT; returns h_out `[B·T, dim]` (scratch).
    private func recurrent(_ x: UnsafeMutablePointer<Float>, batch B: Int, time T: Int, loops: Int, start: Int,
                           cache: MythosCache?, arena: Arena) throws -> UnsafeMutablePointer<Float> {
        let c = config, D = c.dim, N = B * T, L = c.loopDim, R = c.loraRank
        let h = try arena.take(N * D), e = x, out = try arena.take(N * D), o = try arena.take(N * D)
        h.update(from: x, count: N * D)
        out.update(repeating: 0, count: N * D)
        let cum = try arena.take(N), halted = try arena.takeBytes(N), p = try arena.take(N), weights = try arena.take(N)
        cum.update(repeating: 0, count: N)
        halted.update(repeating: 0, count: N)
        let emb = try arena.take(max(L, 1)), down = try arena.take(N * R)
        let threshold = c.actThreshold
        for t in 0..<loops {
            // loop_index_embedding(t): sin then cos of t·10000^(−2k/L), first L channels.
            let half = (L + 1) / 2
            for k in 0..<half {
                let angle = Float(t) * (1 / powf(10000, Float(2 * k) / Float(L)))
                if k < L { emb[k] = sinf(angle) }
                if half + k < L { emb[half + k] = cosf(angle) }
            }
            cxk_mythos_loop_input(o, h, e, emb, Int32(L), Int32(N), Int32(D), loopNorm.data, 1e-6)
            try block.apply(o, batch: B, time: T, start: start, rope: rope,
                            layer: try cache?.layer(.loop(t), block: block), arena: arena)
            // o += (down(o) ⊙ scale[min(t, max−1)]) · B
            loraDown.apply(o, rows: N, into: down)
            let s = loraScale.data + min(t, c.maxLoopIters - 1) * R
            for n in 0..<N { for k in 0..<R { down[n * R + k] *= s[k] } }
            BLAS.gemm(m: N, n: D, k: R, a: down, lda: R, b: loraB.data, ldb: D, c: o, ldc: D, beta: 1)
            // LTI injection, then ACT.
            ltiA.withUnsafeBufferPointer { A in cxk_mythos_inject(h, e, o, A.baseAddress, ltiB.data, Int32(N), Int32(D)) }
            halt.apply(h, rows: N, into: p)
            Kernels.sigmoid(p, N)
            var all = true
            for n in 0..<N {
                let running: Float = halted[n] == 0 ? 1 : 0
                weights[n] = (cum[n] + p[n] >= threshold ? max(1 - cum[n], 0) : p[n]) * running
                cum[n] += p[n] * running
                if cum[n] >= threshold { halted[n] = 1 }
                if halted[n] == 0 { all = false }
            }
            cxk_rows_axpy(out, weights, h, Int32(N), Int32(D))  // h_out += w·h
            if all && cache == nil { break }
        }
        return out
    }
}

/// The KV cache of `batch` sequences for one OpenMythos model: one layer per attention
/// call site (prelude i, loop t, coda i), each holding the tokens it has seen. Loops a
/// call did not run have no keys yet; a later, deeper call starts them (as the
/// reference's dict does). Not thread-safe by design; concurrent use is detected
/// (`CortexError.busy`). A failed call leaves the cache as it was.
public final class MythosCache: @unchecked Sendable {
    public let model: Model
    let mythos: MythosModel
    public let batch: Int
    /// Tokens per KV page (see KVLayer).
    public let pageTokens: Int
    var layers: [MythosModel.LayerKey: KVLayer] = [:]
    /// Tokens seen: the end position of the latest call (`start_pos + T`).
    public internal(set) var position = 0
    let arena: Arena
    private let use = UseFlag()

    init(model: Model, mythos: MythosModel, batch: Int, pageTokens: Int = KVLayer.defaultPageTokens) throws {
        guard batch >= 1, batch <= 1 << 20 else { throw CortexError.invalidArgument("batch must be in [1, 1048576], got \(batch)") }
        guard pageTokens >= 1, pageTokens <= 1 << 16 else {
            throw CortexError.invalidArgument("page_tokens must be in [1, 65536], got \(pageTokens)")
        }
        self.model = model
        self.mythos = mythos
        self.batch = batch
        self.pageTokens = pageTokens
        arena = mythos.borrowArena()
    }

    /// A cache that shares this one's pages copy-on-write: both continue from the same
    /// prefix, and a page is copied only when one of them writes into a shared page.
    public func fork() throws -> MythosCache {
        try exclusive {
            let f = try MythosCache(model: model, mythos: mythos, batch: batch, pageTokens: pageTokens)
            f.layers = layers.mapValues { $0.fork() }
            f.position = position
            return f
        }
    }

    /// KV pages held by this cache, and how many of them are shared with forks.
    public var pageCounts: (held: Int, shared: Int) {
        layers.values.reduce((0, 0)) { acc, l in let c = l.pageCounts; return (acc.0 + c.held, acc.1 + c.shared) }
    }

    deinit { mythos.returnArena(arena) }

    func layer(_ key: MythosModel.LayerKey, block: MythosBlock) throws -> KVLayer {
        if let l = layers[key] { return l }
        let l = try block.attention.makeLayer(batch: batch, limit: mythos.config.maxSeqLen, pageTokens: pageTokens)
        layers[key] = l
        return l
    }

    /// Run `body` as the only user, rolling every layer back if it throws.
    func exclusive<R>(_ body: () throws -> R) throws -> R {
        try use.acquire("the cache")
        defer { use.release() }
        arena.reset()
        let lengths = layers.mapValues(\.length), pos = position
        do {
            return try body()
        } catch {
            for (k, l) in layers {
                if let n = lengths[k] { l.setLength(n) } else { layers[k] = nil }
            }
            position = pos
            throw error
        }
    }

    func advance(to end: Int) { position = max(position, end) }

}
