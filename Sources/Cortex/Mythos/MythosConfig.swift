/// open-mythos 0.5.0 `MythosConfig` (a dataclass): every field, the reference's default
/// when a field is absent. Read from config.json's `config` object
/// (`"architecture": "open_mythos"`, written by `cx.export` from `dataclasses.asdict`).
public struct MythosConfig: Sendable, Equatable {
    public enum Attention: String, Sendable { case gqa, mla }

    public var vocabSize = 32000
    public var dim = 2048
    public var nHeads = 16
    public var nKVHeads = 4
    public var maxSeqLen = 4096
    public var maxLoopIters = 16
    public var preludeLayers = 2
    public var codaLayers = 2
    public var attention: Attention = .mla
    public var kvLoraRank = 512
    public var qLoraRank = 1536
    public var qkRopeHeadDim = 64
    public var qkNopeHeadDim = 128
    public var vHeadDim = 128
    public var nExperts = 64
    public var nSharedExperts = 2
    public var nExpertsPerTok = 4
    public var expertDim = 512
    public var actThreshold: Float = 0.99
    public var ropeTheta: Double = 500000
    public var loraRank = 16
    public var maxOutputTokens = 4096
    public var dropout: Double = 0

    public init() {}

    /// GQA's head width (`dim // n_heads`); RoPE covers all of it.
    public var headDim: Int { dim / nHeads }
    /// Channels that receive the loop-index embedding (`dim // 8`).
    public var loopDim: Int { dim / 8 }
    /// The dense SwiGLU width of prelude and coda blocks (`dim * 4 // 3`).
    public var denseFFNDim: Int { dim * 4 / 3 }

    static let limit = 1 << 20

    public static func parse(_ json: JSON) throws -> MythosConfig {
        guard let pairs = json.objectPairs else { throw CortexError.parse("open_mythos config: not a JSON object") }
        let known: Set<String> = [
            "vocab_size", "dim", "n_heads", "n_kv_heads", "max_seq_len", "max_loop_iters", "prelude_layers",
            "coda_layers", "attn_type", "kv_lora_rank", "q_lora_rank", "qk_rope_head_dim", "qk_nope_head_dim",
            "v_head_dim", "n_experts", "n_shared_experts", "n_experts_per_tok", "expert_dim", "act_threshold",
            "rope_theta", "lora_rank", "max_output_tokens", "dropout",
        ]
        if let extra = pairs.first(where: { !known.contains($0.0) }) {
            throw CortexError.parse("open_mythos config: unknown field '\(extra.0)'")
        }
        var c = MythosConfig()
        func int(_ name: String, _ value: inout Int, min lo: Int) throws {
            guard let v = json[name], !v.isNull else { return }
            guard let i = v.int else { throw CortexError.parse("open_mythos config: \(name) must be an integer") }
            guard i >= lo, i <= limit else {
                throw CortexError.unsupported("open_mythos config: \(name) \(i) is outside [\(lo), \(limit)]")
            }
            value = i
        }
        func number(_ name: String) throws -> Double? {
            guard let v = json[name], !v.isNull else { return nil }
            guard let d = v.double, d.isFinite else { throw CortexError.parse("open_mythos config: \(name) must be a number") }
            return d
        }
        try int("vocab_size", &c.vocabSize, min: 1)
        try int("dim", &c.dim, min: 1)
        try int("n_heads", &c.nHeads, min: 1)
        try int("n_kv_heads", &c.nKVHeads, min: 1)
        try int("max_seq_len", &c.maxSeqLen, min: 1)
        try int("max_loop_iters", &c.maxLoopIters, min: 1)
        try int("prelude_layers", &c.preludeLayers, min: 0)
        try int("coda_layers", &c.codaLayers, min: 0)
        try int("kv_lora_rank", &c.kvLoraRank, min: 1)
        try int("q_lora_rank", &c.qLoraRank, min: 1)
        try int("qk_rope_head_dim", &c.qkRopeHeadDim, min: 0)
        try int("qk_nope_head_dim", &c.qkNopeHeadDim, min: 0)
        try int("v_head_dim", &c.vHeadDim, min: 1)
        try int("n_experts", &c.nExperts, min: 1)
        try int("n_shared_experts", &c.nSharedExperts, min: 0)
        try int("n_experts_per_tok", &c.nExpertsPerTok, min: 1)
        try int("expert_dim", &c.expertDim, min: 1)
        try int("lora_rank", &c.loraRank, min: 1)
        try int("max_output_tokens", &c.maxOutputTokens, min: 0)
        if let a = json["attn_type"], !a.isNull {
            guard let s = a.string, let t = Attention(rawValue: s) else {
                throw CortexError.unsupported("open_mythos config: attn_type must be \"gqa\" or \"mla\"")
            }
            c.attention = t
        }
        if let v = try number("act_threshold") { c.actThreshold = Float(v) }
        if let v = try number("rope_theta") {
            guard v > 0 else { throw CortexError.parse("open_mythos config: rope_theta must be > 0") }
            c.ropeTheta = v
        }
        if let v = try number("dropout") { c.dropout = v }
        try c.validate()
        return c
    }

    /// What the reference needs to build and run (it fails on these, or computes garbage).
    func validate() throws {
        func bad(_ m: String) -> CortexError { .unsupported("open_mythos config: " + m) }
        guard dim >= nHeads else { throw bad("dim \(dim) is smaller than n_heads \(nHeads)") }
        guard nExpertsPerTok <= nExperts else { throw bad("n_experts_per_tok \(nExpertsPerTok) > n_experts \(nExperts)") }
        switch attention {
        case .gqa:
            guard nHeads % nKVHeads == 0 else { throw bad("n_heads \(nHeads) is not a multiple of n_kv_heads \(nKVHeads)") }
            guard headDim % 2 == 0 else { throw bad("RoPE needs an even head dim (dim // n_heads = \(headDim))") }
        case .mla:
            guard qkRopeHeadDim % 2 == 0 else { throw bad("RoPE needs an even qk_rope_head_dim (\(qkRopeHeadDim))") }
            guard qkRopeHeadDim + qkNopeHeadDim > 0 else { throw bad("qk_rope_head_dim + qk_nope_head_dim must be > 0") }
        }
        // Sizes a token's activations reach: keep every product far from overflow.
        let widest = [dim, vocabSize, nHeads * max(headDim, qkRopeHeadDim + qkNopeHeadDim, vHeadDim),
                      expertDim * nExpertsPerTok, kvLoraRank + qkRopeHeadDim, qLoraRank].max() ?? 0
        guard widest <= MythosConfig.limit else { throw bad("a layer is wider than \(MythosConfig.limit)") }
        guard maxSeqLen <= 1 << 20 else { throw bad("max_seq_len \(maxSeqLen) is larger than 2^20") }
    }
}
