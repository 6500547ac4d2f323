/// The Perceiver spike decoder configuration: the fields of the published
/// `CortexConfig` (cortex-engine `cortex/models/config.py`), read from config.json's
/// `config` object (`"architecture": "spike_decoder"`). Fields the decoder does not use at
/// inference (`dropout`, `dtype`, `use_kernels`) are accepted and ignored.
public struct SpikeDecoderConfig: Sendable, Equatable {
    public var hiddenDim = 256        // token width (the three embedding tables)
    public var numLayers = 5          // self-attention blocks over the latents
    public var numHeads = 4           // heads of the blocks and of the behaviour head
    public var headDim = 64           // hidden_dim / num_heads (checked, as the reference does)
    public var mlpRatio = 4.0
    public var numLatents = 128
    public var latentDim = 256
    public var crossAttnHeads = 4
    public var maxNeurons = 512
    public var maxTimeBins = 1024
    public var spikeValueBuckets = 8
    public var behaviorDim = 2
    public var useMaskedSpikeHead = true

    public init() {}

    /// The blocks' MLP width: `int(latent_dim * mlp_ratio)`.
    public var mlpDim: Int { Int(Double(latentDim) * mlpRatio) }

    static let limit = 1 << 16

    public static func parse(_ json: JSON) throws -> SpikeDecoderConfig {
        func bad(_ m: String) -> CortexError { .parse("spike_decoder config: " + m) }
        guard let pairs = json.objectPairs else { throw bad("not a JSON object") }
        let known: Set<String> = [
            "hidden_dim", "num_layers", "num_heads", "head_dim", "mlp_ratio", "dropout", "num_latents", "latent_dim",
            "cross_attn_heads", "max_neurons", "max_time_bins", "spike_value_buckets", "behavior_dim",
            "use_masked_spike_head", "dtype", "use_kernels",
        ]
        if let extra = pairs.first(where: { !known.contains($0.0) }) { throw bad("unknown field '\(extra.0)'") }
        var c = SpikeDecoderConfig()
        func int(_ name: String, _ value: inout Int, min lo: Int) throws {
            guard let v = json[name], !v.isNull else { return }
            guard let i = v.int else { throw bad("\(name) must be an integer") }
            guard i >= lo, i <= limit else { throw CortexError.unsupported("spike_decoder config: \(name) \(i) is outside [\(lo), \(limit)]") }
            value = i
        }
        try int("hidden_dim", &c.hiddenDim, min: 1)
        try int("num_layers", &c.numLayers, min: 0)
        try int("num_heads", &c.numHeads, min: 1)
        try int("head_dim", &c.headDim, min: 1)
        try int("num_latents", &c.numLatents, min: 1)
        try int("latent_dim", &c.latentDim, min: 1)
        try int("cross_attn_heads", &c.crossAttnHeads, min: 1)
        try int("max_neurons", &c.maxNeurons, min: 1)
        try int("max_time_bins", &c.maxTimeBins, min: 1)
        try int("spike_value_buckets", &c.spikeValueBuckets, min: 1)
        try int("behavior_dim", &c.behaviorDim, min: 1)
        if let v = json["mlp_ratio"], !v.isNull {
            guard let d = v.double, d.isFinite, d > 0, d <= 64 else { throw bad("mlp_ratio must be a number in (0, 64]") }
            c.mlpRatio = d
        }
        if let v = json["use_masked_spike_head"], !v.isNull {
            guard let b = v.bool else { throw bad("use_masked_spike_head must be a boolean") }
            c.useMaskedSpikeHead = b
        }
        if let v = json["dropout"], !v.isNull, v.double == nil { throw bad("dropout must be a number") }
        guard c.hiddenDim % c.numHeads == 0, c.headDim * c.numHeads == c.hiddenDim else {
            throw bad("head_dim × num_heads must equal hidden_dim (\(c.headDim) × \(c.numHeads) ≠ \(c.hiddenDim))")
        }
        guard c.latentDim % c.numHeads == 0 else { throw bad("latent_dim \(c.latentDim) is not a multiple of num_heads \(c.numHeads)") }
        guard c.latentDim % c.crossAttnHeads == 0 else {
            throw bad("latent_dim \(c.latentDim) is not a multiple of cross_attn_heads \(c.crossAttnHeads)")
        }
        guard c.mlpDim >= 1, c.mlpDim <= limit * 64 else { throw bad("the MLP width int(latent_dim × mlp_ratio) is out of range") }
        return c
    }
}
