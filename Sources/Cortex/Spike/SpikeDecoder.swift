
/// The Perceiver spike decoder (the PyTorch reference is
/// `cortex_swift.torch_spike.SpikeDecoder`; weights are its `state_dict()`):
///
///     token_e = neuron_emb[n_e] + time_emb[t_e] + value_emb[v_e]
///     x_b     = x0 + W_o · MHA(W_q LN_q(x0), W_kv LN_kv(tokens of request b))     x0: learned latents
///     blocks  : x += W_o MHA(W_qkv LN(x));  x += W₂ GELU(W₁ LN(x))                 (pre-LN)
///     y_b,o   = w_out · MHA(W_q query_o, W_kv LN_head(LN_final(x_b)))
///
/// Events arrive packed, without padding: request b owns events `offsets[b] ..<
/// offsets[b+1]`. Only the cross-attention reads events, so it runs per request on that
/// request's keys; everything after it runs on all requests' latents at once ([B·L, D]
/// rows per GEMM). A request with no events gets the latents-only prediction (its
/// cross-attention adds zero, as in the reference). Stateless and immutable: safe to
/// call from several threads at once.
public final class SpikeDecoder: @unchecked Sendable {
    public let config: SpikeDecoderConfig
    let neuronEmb: Tensor, timeEmb: Tensor, valueEmb: Tensor
    let latents: Tensor
    let normKV: Norm, crossKV: Linear, crossOut: Linear
    /// `W_q LN_q(x0)`: the cross-attention's queries do not depend on the input.
    let crossQ: [Float]
    let blocks: [Block]
    let finalNorm: Norm, headNorm: Norm
    let headKV: Linear
    /// `W_q query`: the behaviour head's queries, also input-independent.
    let headQ: [Float]
    let headOut: Linear  // D -> 1, shared by the outputs
    public let parameterCount: Int
    /// Made by the first stream (`SpikeStream`), shared by all.
    let streamTable = Locked<TimeTable?>(nil)

    struct Block {
        let normAttn: Norm, qkv: Linear, out: Linear, normMLP: Norm, up: Linear, down: Linear
    }

    public init(config c: SpikeDecoderConfig, weights w: WeightSource) throws {
        config = c
        let D = c.latentDim, Dh = c.hiddenDim, L = c.numLatents
        neuronEmb = try w.tensor("tokenizer.neuron_emb.weight", shape: [c.maxNeurons, Dh])
        timeEmb = try w.tensor("tokenizer.time_emb.weight", shape: [c.maxTimeBins, Dh])
        valueEmb = try w.tensor("tokenizer.value_emb.weight", shape: [c.spikeValueBuckets, Dh])
        latents = try w.tensor("encoder.latents", shape: [L, D])
        let normQ = try Norm(w, "encoder.cross_attn.norm_q", features: D, bias: true)
        let qProj = try Linear(w, "encoder.cross_attn.q_proj", in: D, out: D, bias: false)
        normKV = try Norm(w, "encoder.cross_attn.norm_kv", features: Dh, bias: true)
        crossKV = try Linear(w, "encoder.cross_attn.kv_proj", in: Dh, out: 2 * D, bias: false)
        crossOut = try Linear(w, "encoder.cross_attn.out_proj", in: D, out: D, bias: false)
        var blocks: [Block] = []
        for i in 0..<c.numLayers {
            let p = "encoder.self_attn_blocks.\(i)."
            blocks.append(Block(
                normAttn: try Norm(w, p + "norm_attn", features: D, bias: true),
                qkv: try Linear(w, p + "qkv_proj", in: D, out: 3 * D, bias: false),
                out: try Linear(w, p + "out_proj", in: D, out: D, bias: false),
                normMLP: try Norm(w, p + "norm_mlp", features: D, bias: true),
                up: try Linear(w, p + "mlp.0", in: D, out: c.mlpDim, bias: false),
                down: try Linear(w, p + "mlp.2", in: c.mlpDim, out: D, bias: false)))
        }
        self.blocks = blocks
        finalNorm = try Norm(w, "encoder.final_norm", features: D, bias: true)
        let query = try w.tensor("behavior_head.query", shape: [c.behaviorDim, D])
        let headQProj = try Linear(w, "behavior_head.q_proj", in: D, out: D, bias: false)
        headKV = try Linear(w, "behavior_head.kv_proj", in: D, out: 2 * D, bias: false)
        headOut = try Linear(w, "behavior_head.out_proj", in: D, out: 1, bias: false)
        headNorm = try Norm(w, "behavior_head.norm", features: D, bias: true)
        var aux = 0
        if c.useMaskedSpikeHead {  // the auxiliary pretraining head: loaded, not used
            aux = try Linear(w, "masked_spike_head.proj", in: D, out: c.spikeValueBuckets).parameterCount
        }

        var x = Array(UnsafeBufferPointer(start: latents.data, count: L * D))
        var q = [Float](repeating: 0, count: L * D)
        x.withUnsafeMutableBufferPointer { xp in
            normQ.apply(xp.baseAddress!, rows: L)
            q.withUnsafeMutableBufferPointer { qProj.apply(xp.baseAddress!, rows: L, into: $0.baseAddress!) }
        }
        crossQ = q
        var hq = [Float](repeating: 0, count: c.behaviorDim * D)
        hq.withUnsafeMutableBufferPointer { headQProj.apply(query.data, rows: c.behaviorDim, into: $0.baseAddress!) }
        headQ = hq

        var n = neuronEmb.count + timeEmb.count + valueEmb.count + latents.count + normQ.parameterCount
        n += qProj.parameterCount + normKV.parameterCount + crossKV.parameterCount + crossOut.parameterCount
        for b in blocks {
            n += b.normAttn.parameterCount + b.qkv.parameterCount + b.out.parameterCount + b.normMLP.parameterCount
            n += b.up.parameterCount + b.down.parameterCount
        }
        n += finalNorm.parameterCount + query.count + headQProj.parameterCount + headKV.parameterCount
        n += headOut.parameterCount + headNorm.parameterCount + aux
        parameterCount = n
    }

    /// Check packed events against the config: equal lengths, offsets from 0 to E
    /// non-decreasing, every id inside its table. Returns the batch size.
    public func validate(neurons: [Int], timeBins: [Int], values: [Int], offsets: [Int]) throws -> Int {
        let e = neurons.count
        try checkEvents(neurons: neurons, timeBins: timeBins, values: values, timeLimit: config.maxTimeBins,
                        timeField: "max_time_bins")
        guard offsets.count >= 2 else { throw CortexError.shapeMismatch("offsets: expected B + 1 >= 2 entries, got \(offsets.count)") }
        guard offsets.first == 0, offsets.last == e else {
            throw CortexError.invalidArgument("offsets must start at 0 and end at the event count \(e) (got \(offsets.first ?? 0) ... \(offsets.last ?? 0))")
        }
        for i in 1..<offsets.count where offsets[i] < offsets[i - 1] {
            throw CortexError.invalidArgument("offsets must not decrease (offsets[\(i)] = \(offsets[i]) < \(offsets[i - 1]))")
        }
        return offsets.count - 1
    }

    /// Events as columns of one length, every id inside its table; time bins inside
    /// `[0, timeLimit)` (the config's table for requests, the stride for a stream). The
    /// message names the event, the field and the limit it broke.
    func checkEvents(neurons: [Int], timeBins: [Int], values: [Int], timeLimit: Int, timeField: String) throws {
        guard timeBins.count == neurons.count, values.count == neurons.count else {
            throw CortexError.shapeMismatch("events: neuron_ids, time_bins and values must have one length (\(neurons.count), \(timeBins.count), \(values.count))")
        }
        func check(_ a: [Int], _ name: String, _ n: Int, _ field: String) throws {
            if let i = a.firstIndex(where: { $0 < 0 || $0 >= n }) {
                throw CortexError.invalidArgument("event \(i): \(name) \(a[i]) is outside [0, \(n)) (\(field))")
            }
        }
        try check(neurons, "neuron_id", config.maxNeurons, "max_neurons")
        try check(timeBins, "time_bin", timeLimit, timeField)
        try check(values, "value", config.spikeValueBuckets, "spike_value_buckets")
    }

    /// Parts for `eachHead` over B requests of `heads` heads, `work` per request.
    static func headParts(_ B: Int, _ heads: Int, work: Int) -> Int {
        Parallel.parts(work: B * work, grain: 1 << 15, items: B * heads)
    }

    /// `body(b, h, scores)` for every (request, head) pair, split over up to `parts`
    /// threads; each part has its own `perPart` floats of scores (`parts · perPart` in all).
    static func eachHead(_ B: Int, _ heads: Int, parts: Int, scores: UnsafeMutablePointer<Float>, perPart: Int,
                         _ body: (Int, Int, UnsafeMutablePointer<Float>) -> Void) {
        Parallel.run(parts: parts) { part, parts in
            for pair in Parallel.slice(B * heads, part: part, parts: parts, align: 1) {
                body(pair / heads, pair % heads, scores + part * perPart)
            }
        }
    }

    /// A LayerNorm over `rows` rows, split over the threads for large inputs.
    static func norm(_ n: Norm, _ p: UnsafeMutablePointer<Float>, rows: Int, width: Int) {
        Parallel.run(parts: Parallel.parts(work: rows * width, grain: 1 << 14, items: rows)) { part, parts in
            let r = Parallel.slice(rows, part: part, parts: parts, align: 1)
            n.apply(p + r.lowerBound * width, rows: r.count)
        }
    }

    /// Hand velocity `[B, behavior_dim]` for B requests of packed events.
    public func decode(neurons: [Int], timeBins: [Int], values: [Int], offsets: [Int]) throws -> Tensor {
        let B = try validate(neurons: neurons, timeBins: timeBins, values: values, offsets: offsets)
        let c = config, D = c.latentDim, Dh = c.hiddenDim, E = neurons.count

        // Tokens and their keys/values, all requests in one GEMM.
        let tokens = try FloatBuffer(count: max(1, E * Dh), zeroed: false)
        let kv = try FloatBuffer(count: max(1, E * 2 * D), zeroed: false)
        let t = tokens.pointer
        for e in 0..<E {
            let row = t + e * Dh
            row.update(from: neuronEmb.data + neurons[e] * Dh, count: Dh)
            Vec.add(row, timeEmb.data + timeBins[e] * Dh, Dh)
            Vec.add(row, valueEmb.data + values[e] * Dh, Dh)
        }
        normKV.apply(t, rows: E)
        crossKV.apply(t, rows: E, into: kv.pointer)
        let out = try Tensor(zeros: [B, c.behaviorDim])
        try decode(keysValues: kv.pointer, offsets: offsets, into: out.data, scratch: SpikeScratch())
        return out
    }

    /// Everything after the tokens' keys/values: `keysValues` is `[E, 2·latent_dim]`
    /// (`W_kv LN_kv(token)` of every event, request b's rows `offsets[b] ..< offsets[b+1]`);
    /// writes `[B, behavior_dim]` to `out`. Shared by `decode` and `SpikeStream`.
    func decode(keysValues kvp: UnsafePointer<Float>, offsets: [Int], into out: UnsafeMutablePointer<Float>,
                scratch: SpikeScratch) throws {
        let c = config, D = c.latentDim, L = c.numLatents, B = offsets.count - 1, E = offsets[B]
        let rows = try Checked.mul(B, L, "batch × num_latents")
        let maxEvents = zip(offsets.dropFirst(), offsets).map { $0 - $1 }.max() ?? 0
        let perPart = max(1, max(L, c.behaviorDim) * max(maxEvents, L))
        let x = try scratch.x.reserve(rows * D), attn = try scratch.attn.reserve(rows * D)
        let normed = try scratch.normed.reserve(rows * D)
        let wide = try scratch.wide.reserve(rows * max(3 * D, c.mlpDim))
        let crossParts = SpikeDecoder.headParts(B, c.crossAttnHeads, work: L * E * D)
        let selfParts = SpikeDecoder.headParts(B, c.numHeads, work: L * L * D)
        let scores = try scratch.scores.reserve(max(crossParts, selfParts) * perPart)

        // Cross-attention per request (its own events only), then x = x0 + W_o(·) for all.
        let dc = D / c.crossAttnHeads
        for b in 0..<B { (x + b * L * D).update(from: latents.data, count: L * D) }
        crossQ.withUnsafeBufferPointer { q in
            SpikeDecoder.eachHead(B, c.crossAttnHeads, parts: crossParts, scores: scores, perPart: perPart) { b, h, s in
                let start = offsets[b], o = start * 2 * D + h * dc
                Attention.attend(q: q.baseAddress! + h * dc, ldq: D, k: kvp + o, ldk: 2 * D, v: kvp + o + D, ldv: 2 * D,
                                 out: attn + b * L * D + h * dc, ldo: D, rows: L, keys: offsets[b + 1] - start,
                                 heads: 1, dim: dc, scores: s)
            }
        }
        crossOut.apply(attn, rows: rows, into: x, accumulate: true)

        // Pre-LN self-attention blocks over every request's latents.
        let dh = D / c.numHeads
        for blk in blocks {
            normed.update(from: x, count: rows * D)
            SpikeDecoder.norm(blk.normAttn, normed, rows: rows, width: D)
            blk.qkv.apply(normed, rows: rows, into: wide)
            SpikeDecoder.eachHead(B, c.numHeads, parts: selfParts, scores: scores, perPart: perPart) { b, h, s in
                let base = wide + b * L * 3 * D + h * dh
                Attention.attend(q: base, ldq: 3 * D, k: base + D, ldk: 3 * D, v: base + 2 * D, ldv: 3 * D,
                                 out: attn + b * L * D + h * dh, ldo: D, rows: L, keys: L, heads: 1, dim: dh,
                                 scores: s)
            }
            blk.out.apply(attn, rows: rows, into: x, accumulate: true)
            normed.update(from: x, count: rows * D)
            SpikeDecoder.norm(blk.normMLP, normed, rows: rows, width: D)
            blk.up.apply(normed, rows: rows, into: wide)
            let m = c.mlpDim
            Parallel.run(parts: Parallel.parts(work: rows * m, grain: 1 << 14, items: rows)) { part, parts in
                let r = Parallel.slice(rows, part: part, parts: parts, align: 1)
                Kernels.gelu(wide + r.lowerBound * m, r.count * m)
            }
            blk.down.apply(wide, rows: rows, into: x, accumulate: true)
        }
        finalNorm.apply(x, rows: rows)
        headNorm.apply(x, rows: rows)
        headKV.apply(x, rows: rows, into: wide)

        // Behaviour head: per-output queries attend to each request's latents; one shared
        // output projection per query.
        headQ.withUnsafeBufferPointer { q in
            for b in 0..<B {
                let base = wide + b * L * 2 * D
                Attention.attend(q: q.baseAddress!, ldq: D, k: base, ldk: 2 * D, v: base + D, ldv: 2 * D,
                                 out: attn, ldo: D, rows: c.behaviorDim, keys: L, heads: c.numHeads, dim: dh,
                                 scores: scores)
                headOut.apply(attn, rows: c.behaviorDim, into: out + b * c.behaviorDim)
            }
        }
    }
}

/// Scratch buffers for `SpikeDecoder.decode(keysValues:...)`: a stateless call makes its
/// own; a stream keeps one, so its steps allocate only when a window outgrows the last.
final class SpikeScratch {
    let x = GrowableBuffer(), attn = GrowableBuffer(), normed = GrowableBuffer(), wide = GrowableBuffer()
    let scores = GrowableBuffer()
}

/// A float buffer that is reallocated only when a larger size is asked for.
final class GrowableBuffer {
    private var buffer: FloatBuffer?
    func reserve(_ count: Int) throws -> UnsafeMutablePointer<Float> {
        if let b = buffer, b.count >= count { return b.pointer }
        let b = try FloatBuffer(count: max(count, 1), zeroed: false)
        buffer = b
        return b.pointer
    }
}

extension Model {
    /// The spike decoder of a "spike_decoder" model; `use` completes the error for any
    /// other model ("cx_model_decode needs ...", "a spike stream needs ...").
    public func requireSpikeDecoder(for use: String) throws -> SpikeDecoder {
        guard let spikeDecoder else {
            throw CortexError.unsupported("this is a '\(architecture)' model; \(use) needs a spike_decoder model")
        }
        return spikeDecoder
    }
}
