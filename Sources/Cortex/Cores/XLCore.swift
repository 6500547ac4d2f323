#if canImport(Glibc)
import Glibc
#endif
import CKernels

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
    let wq: Linear?, wk: Linear?, wv: Linear?, wr: Linear, wo: Linear
    let axonQ: AxonLayer?, axonK: AxonLayer?, axonV: AxonLayer?
    let consistent: Bool
    let u: Tensor, vBias: Tensor  // [heads, headDim]
    /// 1 / 10000^(2j/d), the sinusoid frequencies of `_relative_positions`.
    let invFreq: [Float]
    /// `r_proj` of the relative positions for one step (L = mem_len + 1), computed once.
    let stepPositions: Tensor
    /// Keys and values of the memory are cached between calls (derived state), unless
    /// AxonLayers compute them (their replay depends on the whole window).
    var cachesMemoryKV: Bool { axonQ == nil && memLen > 0 }

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
        let bias = config.useBias
        wq = linear ? try Linear(weights, prefix + "q_proj", in: model, out: HD, bias: bias) : nil
        wk = linear ? try Linear(weights, prefix + "k_proj", in: model, out: HD, bias: bias) : nil
        wv = linear ? try Linear(weights, prefix + "v_proj", in: model, out: HD, bias: bias) : nil
        wr = try Linear(weights, prefix + "r_proj", in: model, out: HD, bias: false)
        wo = try Linear(weights, prefix + "o_proj", in: HD, out: model, bias: bias)
        u = try weights.tensor(prefix + "u", shape: [heads, headDim])
        vBias = try weights.tensor(prefix + "v", shape: [heads, headDim])
        let dModel = config.hiddenSize, half = (dModel + 1) / 2
        let freqs = (0..<half).map { 1 / powf(10000, Float(2 * $0) / Float(dModel)) }
        invFreq = freqs
        try BLAS.ensureLoaded()
        let L = memLen + 1
        let pos = try Tensor(zeros: [L, model])
        stepPositions = try Tensor(zeros: [L, HD])
        withExtendedLifetime(pos) {  // raw pointers below must not outlive the buffer
            XLCore.relativePositions(L, model: dModel, invFreq: freqs, into: pos.data)
            wr.apply(pos.data, rows: L, into: stepPositions.data)
        }
    }

    public var inputSize: Int { model }
    public var outputSize: Int { model }
    public var stateSpecs: [StateSpec] {
        [StateSpec(name: "mem", perRow: [memLen, model]), StateSpec(name: "mem_seg", perRow: [memLen], initial: consistent ? XLCore.emptySlot : -1,
                   resetValue: consistent ? XLCore.emptySlot : 0)]
            + axonLayers.flatMap(\.stateSpecs)
            + (cachesMemoryKV ? [StateSpec(name: "cortex_cache.k", perRow: [memLen, heads * headDim], derived: true),
                                 StateSpec(name: "cortex_cache.v", perRow: [memLen, heads * headDim], derived: true),
                                 StateSpec(name: "cortex_cache.valid", perRow: [1], derived: true)] : [])
    }
    /// What `cortex_cache.valid` holds for row b when its cache is current: 1 + its slot.
    @inline(__always) static func cacheTag(_ arena: Arena, _ b: Int) -> Float {
        1 + Float(arena.routeSlots.map { $0[b] } ?? 0)
    }

    /// Segment id of a memory slot never written (consistent math): no token gets it,
    /// so such slots are never attended. Exact in float32.
    static let emptySlot: Float = -16_777_216
    var axonLayers: [AxonLayer] { [axonQ, axonK, axonV].compactMap { $0 } }
    public var parameterCount: Int {
        u.count + vBias.count + [wq, wk, wv, wr, wo].reduce(0) { $0 + ($1?.parameterCount ?? 0) }
            + axonLayers.reduce(0) { $0 + $1.parameterCount }
    }

    /// `_relative_positions(L)`: sinusoids of positions L−1 … 0, [L, d_model].
    static func relativePositions(_ L: Int, model d: Int, invFreq: [Float], into p: UnsafeMutablePointer<Float>) {
        let half = (d + 1) / 2
        for l in 0..<L {
            let pos = Float(L - 1 - l)
            for j in 0..<half {
                let a = pos * invFreq[j]
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
        // Segment ids over [memory; inputs]: they continue from the memory's last one and
        // advance at each reset.
        let seg = try arena.take(B * L)
        for b in 0..<B {
            let sb = seg + b * L
            sb.update(from: memSeg + b * M, count: M)
            var id: Float = M > 0 ? memSeg[b * M + M - 1] : 0
            if consistent && id == XLCore.emptySlot { id = -1 }  // continue as the reference numbers
            for t in 0..<T {
                if let resets, resets[b * T + t] != 0 { id += 1 }
                sb[M + t] = id
            }
        }
        // Queries, and keys/values of the memory (M rows per batch row, at memK/memV with
        // row stride `memStride`) and of the new tokens (T rows at newK/newV).
        let q = try arena.take(B * T * HD)
        let memK: UnsafeMutablePointer<Float>, memV: UnsafeMutablePointer<Float>, memStride: Int
        let newK: UnsafeMutablePointer<Float>, newV: UnsafeMutablePointer<Float>, newStride: Int
        var cache: (k: UnsafeMutablePointer<Float>, v: UnsafeMutablePointer<Float>, valid: UnsafeMutablePointer<Float>)?
        if let axonQ, let axonK, let axonV {
            let slot = s0 + 2, n = AxonCore.slotCount
            try axonQ.run(x: x, y: q, batch: B, time: T, state: state[slot..<(slot + n)], resets: resets, arena: arena)
            // K/V replay [memory; inputs]: reset at its start and at every segment change.
            let xkv = try arena.take(B * L * d), k = try arena.take(B * L * HD), v = try arena.take(B * L * HD)
            let kvResets = try arena.takeBytes(B * L)
            for b in 0..<B {
                (xkv + b * L * d).update(from: mem + b * M * d, count: M * d)
                (xkv + b * L * d + M * d).update(from: x + b * T * d, count: T * d)
                for l in 0..<L { kvResets[b * L + l] = l == 0 || seg[b * L + l] != seg[b * L + l - 1] ? 1 : 0 }
            }
            try axonK.run(x: xkv, y: k, batch: B, time: L, state: state[(slot + n)..<(slot + 2 * n)],
                          resets: UnsafePointer(kvResets), arena: arena)
            try axonV.run(x: xkv, y: v, batch: B, time: L, state: state[(slot + 2 * n)..<(slot + 3 * n)],
                          resets: UnsafePointer(kvResets), arena: arena)
            memK = k; memV = v; memStride = L * HD
            newK = k + M * HD; newV = v + M * HD; newStride = L * HD
        } else if let wq, let wk, let wv {
            let perRow = arena.routing(rowsPerStream: T)
            wq.apply(x, rows: B * T, into: q, routing: perRow)
            newK = try arena.take(B * T * HD); newV = try arena.take(B * T * HD); newStride = T * HD
            wk.apply(x, rows: B * T, into: newK, routing: perRow)
            wv.apply(x, rows: B * T, into: newV, routing: perRow)
            if cachesMemoryKV {
                // The memory's keys/values live in the (derived) cache; rows whose cache is
                // not valid project their memory now. `valid` holds 1 + the adapter slot the
                // cache was projected with (routed adapters change k and v).
                let slot = s0 + 2
                let c = (k: state[slot], v: state[slot + 1], valid: state[slot + 2])
                for b in 0..<B where c.valid[b] != XLCore.cacheTag(arena, b) {
                    let kb = c.k + b * M * HD, vb = c.v + b * M * HD
                    let routing = arena.routeSlots.map { Routing(slots: $0 + b, rowsPerStream: M) }
                    wk.apply(mem + b * M * d, rows: M, into: kb, routing: routing)
                    wv.apply(mem + b * M * d, rows: M, into: vb, routing: routing)
                }
                cache = c
                memK = c.k; memV = c.v
            } else {
                memK = newK; memV = newV  // M == 0: no memory rows
            }
            memStride = M * HD
        } else {
            return
        }
        // Relative position projections, shared by the batch (fixed for a step) — unless
        // routed adapters make them per row (the reference projects them per row).
        var r = UnsafePointer(stepPositions.data), rStride = 0
        if L != M + 1 || (wr.adapter != nil && arena.routeSlots != nil) {
            let pos = try arena.take(L * d)
            XLCore.relativePositions(L, model: d, invFreq: invFreq, into: pos)
            if let slots = arena.routeSlots, wr.adapter != nil {
                let rr = try arena.take(B * L * HD)
                for b in 0..<B {
                    wr.apply(pos, rows: L, into: rr + b * L * HD, routing: Routing(slots: slots + b, rowsPerStream: L))
                }
                r = UnsafePointer(rr); rStride = L * HD
            } else {
                let rr = try arena.take(L * HD)
                wr.apply(pos, rows: L, into: rr)
                r = UnsafePointer(rr)
            }
        }
        // Attention, one (row, head) pair at a time, pairs split over the threads; each
        // part has its own scratch.
        let ctx = try arena.take(B * T * HD)
        let parts = Parallel.parts(work: B * NH * T * L * D, grain: 32_768, items: B * NH)
        let perPart = 2 * T * L + 2 * T * D
        let scratch = try arena.take(parts * perPart)
        let scale = Float(pow(Double(D), -0.5))
        Parallel.run(parts: parts) { part, parts in
            let ac = scratch + part * perPart, bd = ac + T * L, qu = bd + T * L, qv = qu + T * D
            for pair in Parallel.slice(B * NH, part: part, parts: parts, align: 1) {
                let b = pair / NH, h = pair % NH
                let uh = u.data + h * D, vh = vBias.data + h * D
                for t in 0..<T {
                    let qt = q + (b * T + t) * HD + h * D
                    for j in 0..<D { qu[t * D + j] = qt[j] + uh[j]; qv[t * D + j] = qt[j] + vh[j] }
                }
                let mk = memK + b * memStride + h * D, mv = memV + b * memStride + h * D
                let nk = newK + b * newStride + h * D, nv = newV + b * newStride + h * D
                // (q+u)·kᵀ over memory then new keys, and (q+v)·rᵀ, for every (t, l).
                BLAS.product(transB: true, m: T, n: M, k: D, a: qu, lda: D, b: mk, ldb: HD, c: ac, ldc: L)
                BLAS.product(transB: true, m: T, n: T, k: D, a: qu, lda: D, b: nk, ldb: HD, c: ac + M, ldc: L)
                BLAS.product(transB: true, m: T, n: L, k: D, a: qv, lda: D, b: r + b * rStride + h * D, ldb: HD, c: bd, ldc: L)
                softmaxRows(ac, bd, seg: seg + b * L, time: T, length: L, scale: scale)
                // Context = attention · V (memory part, then new tokens).
                let out = ctx + b * T * HD + h * D
                BLAS.product(m: T, n: D, k: M, a: ac, lda: L, b: mv, ldb: HD, c: out, ldc: HD)
                BLAS.product(m: T, n: D, k: T, a: ac + M, lda: L, b: nv, ldb: HD, c: out, ldc: HD, beta: M > 0 ? 1 : 0)
            }
        }
        wo.apply(ctx, rows: B * T, into: y, routing: arena.routing(rowsPerStream: T))
        // Roll the memory (and the key/value cache) by T: the last mem_len of
        // [memory; inputs] and their segment ids.
        guard M > 0 else { return }
        for b in 0..<B {
            XLCore.roll(mem + b * M * d, rows: M, width: d, appending: x + b * T * d, count: T)
            (memSeg + b * M).update(from: seg + b * L + T, count: M)
            if let cache {
                XLCore.roll(cache.k + b * M * HD, rows: M, width: HD, appending: newK + b * T * HD, count: T)
                XLCore.roll(cache.v + b * M * HD, rows: M, width: HD, appending: newV + b * T * HD, count: T)
                cache.valid[b] = XLCore.cacheTag(arena, b)
            }
        }
    }

    /// Keep the last `rows` rows of [buffer; new]: shift out `count` rows, append.
    static func roll(_ buffer: UnsafeMutablePointer<Float>, rows M: Int, width w: Int,
                     appending new: UnsafePointer<Float>, count T: Int) {
        if T >= M {
            buffer.update(from: new + (T - M) * w, count: M * w)
        } else {
            buffer.update(from: buffer + T * w, count: (M - T) * w)  // overlapping: memmove semantics
            (buffer + (M - T) * w).update(from: new, count: T * w)
        }
    }

    /// Turn the scores of one (row, head) into attention weights in place: add the
    /// relative-position term through `_rel_shift`, mask, scale, softmax.
    private func softmaxRows(_ ac: UnsafeMutablePointer<Float>, _ bd: UnsafePointer<Float>, seg sb: UnsafePointer<Float>,
                             time T: Int, length L: Int, scale: Float) {
        let M = memLen
        for t in 0..<T {
            let row = ac + t * L
            // Keys after M + t are masked (causal); consistent math also hides those
            // before the step-mode window (l < t).
            let first = consistent ? t : 0, last = M + t
            var mx = -Float.greatestFiniteMagnitude
            // _rel_shift: element (t, l) of the shifted matrix comes from the zero-padded
            // [T, L+1] matrix at flat index T + t·L + l.
            var src = (T + t * L) / (L + 1), col = (T + t * L) % (L + 1)
            for l in 0...last {
                let shifted: Float = col == 0 ? 0 : bd[src * L + col - 1]
                let allowed = l >= first && sb[l] == sb[last]
                let logit = allowed ? (row[l] + shifted) * scale : -Float.greatestFiniteMagnitude
                row[l] = logit
                mx = max(mx, logit)
                col += 1
                if col == L + 1 { col = 0; src += 1 }
            }
            let mxv = Kernels.V(repeating: mx)
            Kernels.map(row, last + 1) { Kernels.exp($0 - mxv) }
            var sum: Float = 0
            for l in 0...last { sum += row[l] }
            let inv = 1 / sum
            for l in 0...last { row[l] *= inv }
            if last + 1 < L { (row + last + 1).update(repeating: 0, count: L - last - 1) }
        }
    }
}

/// The stack config's "xl" cell (see `CoreKind`).
extension XLCore: CoreKind {
    static let tag = "xl"
    static let classNames = (blocks: "XLCell", scaffolds: "XLCore")
    static let schema: StackSchema.Fields = ["n_heads": .init(type: .int(min: 1)), "head_dim": .init(type: .int(min: 1), nullable: true),
                                           "mem_len": .init(type: .int(min: 0)), "attn_dropout": StackSchema.probability,
                                           "out_dropout": StackSchema.probability, "use_bias": .init(type: .bool),
                                           "use_axon_qkv": .init(type: .bool), "axon_qkv_config": StackSchema.axonConfig,
                                           "cortex_math": .init(type: .string)]
    static let axonFlags = ["use_axon_qkv"]

    static func parseCore(_ json: JSON, hiddenSize: Int) throws -> CoreConfig {
        var c = Config(hiddenSize: hiddenSize)
        c.axonQKV = try json.axonOption("use_axon_qkv", config: "axon_qkv_config", hiddenSize: hiddenSize, core: tag)
        c.consistent = try json.mathField(core: tag)
        c.heads = try json.intField("n_heads", default: 4, in: 1...4096, core: tag)
        if let hd = json["head_dim"], !hd.isNull { c.headDim = try json.intField("head_dim", default: 0, in: 1...65536, core: tag) }
        c.memLen = try json.intField("mem_len", default: 128, in: 0...1_000_000, core: tag)
        c.useBias = try json.boolField("use_bias", default: true, core: tag)
        let config = c
        return CoreConfig(kind: Self.self) { w, p in try XLCore(config: config, weights: w, prefix: p) }
    }
}
