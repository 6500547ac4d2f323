/// A `CortexStackConfig` as cortexcore dumps it (`model_dump_json()`), in either
/// spelling: 0.1.6's `blocks` / `block_type` / `cell` / `cell_type`, or the seed's
/// newer `scaffolds` / `scaffold_type` / `core` / `core_type`.
public struct StackConfig: Sendable {
    /// Which spelling the file used; it decides the state names (0.1.6:
    /// `PassThroughBlock_0.LSTMCell.h`, seed: `PassThroughScaffold_0.LSTMCore.h`).
    public enum Spelling: Sendable { case blocks, scaffolds }

    public var dHidden: Int
    public var postNorm: Bool
    public var scaffolds: [ScaffoldConfig]
    public var spelling: Spelling

    /// Generous bounds that keep every size computation far from overflow.
    static let maxHidden = 1 << 20
    static let maxScaffolds = 4096

    public static func parse(_ json: JSON) throws -> StackConfig {
        guard json.objectPairs != nil else { throw CortexError.parse("stack config is not a JSON object") }
        guard let d = json["d_hidden"]?.int else { throw CortexError.parse("stack config: d_hidden must be an integer") }
        guard d >= 1, d <= maxHidden else { throw CortexError.unsupported("stack config: d_hidden \(d) is outside [1, \(maxHidden)]") }
        var postNorm = true
        if let p = json["post_norm"], !p.isNull {
            guard let b = p.bool else { throw CortexError.parse("stack config: post_norm must be a boolean") }
            postNorm = b
        }
        if let ra = json["routed_adapter"], !ra.isNull, ra["enabled"]?.bool ?? true {
            throw CortexError.unsupported("stack config: routed_adapter is not supported yet")
        }
        let spelling: Spelling
        let list: [JSON]
        if let b = json["blocks"] {
            guard let a = b.array else { throw CortexError.parse("stack config: blocks must be a list") }
            spelling = .blocks; list = a
        } else if let s = json["scaffolds"] {
            guard let a = s.array else { throw CortexError.parse("stack config: scaffolds must be a list") }
            spelling = .scaffolds; list = a
        } else {
            throw CortexError.parse("stack config: neither 'blocks' nor 'scaffolds' is present")
        }
        guard list.count <= maxScaffolds else { throw CortexError.unsupported("stack config: more than \(maxScaffolds) blocks") }
        let field = spelling == .blocks ? "blocks" : "scaffolds"
        var scaffolds: [ScaffoldConfig] = []
        for (i, item) in list.enumerated() {
            do {
                scaffolds.append(try ScaffoldConfig.parse(item, dHidden: d))
            } catch let e as CortexError {
                throw e.prefixed("stack config \(field)[\(i)]")
            }
        }
        return StackConfig(dHidden: d, postNorm: postNorm, scaffolds: scaffolds, spelling: spelling)
    }
}

/// One scaffold (0.1.6: block) and the core (0.1.6: cell) inside it.
public struct ScaffoldConfig: Sendable {
    public enum Kind: String, Sendable, CaseIterable {
        case passThrough = "passthrough"

        /// Class names, used as state keys: (0.1.6, seed).
        var classNames: (String, String) {
            switch self {
            case .passThrough: return ("PassThroughBlock", "PassThroughScaffold")
            }
        }
    }

    public var kind: Kind
    public var core: CoreConfig

    static func parse(_ json: JSON, dHidden: Int) throws -> ScaffoldConfig {
        guard json.objectPairs != nil else { throw CortexError.parse("not a JSON object") }
        guard let tag = (json["block_type"] ?? json["scaffold_type"])?.string else {
            throw CortexError.parse("missing block_type (or scaffold_type)")
        }
        guard let kind = Kind(rawValue: tag) else {
            let known = Kind.allCases.map(\.rawValue).joined(separator: ", ")
            throw CortexError.unsupported("unknown block type '\(tag)' (supported: \(known))")
        }
        guard let coreJSON = json["cell"] ?? json["core"], !coreJSON.isNull else {
            throw CortexError.parse("block '\(tag)' has no cell (or core)")
        }
        // PassThrough runs its core at the stack width (cortexcore overrides hidden_size).
        let core = try CoreConfig.parse(coreJSON, hiddenSize: dHidden)
        return ScaffoldConfig(kind: kind, core: core)
    }
}

/// The core inside a scaffold.
public enum CoreConfig: Sendable, Equatable {
    case lstm(LSTMCore.Config)
    case causalConv1d(CausalConv1dCore.Config)
    case agalite(AGaLiTeCore.Config)
    case slstm(SLSTMCore.Config)
    case mlstm(MLSTMCore.Config)
    case xl(XLCore.Config)
    case axon(AxonCore.Config)

    public static let supportedTypes = ["lstm", "cconv", "agalite", "slstm", "mlstm", "xl", "axon"]

    /// Class names, used as state keys: (0.1.6, seed).
    var classNames: (String, String) {
        switch self {
        case .lstm: return ("LSTMCell", "LSTMCore")
        case .causalConv1d: return ("CausalConv1d", "CausalConv1dCore")
        case .agalite: return ("AGaLiTeCell", "AGaLiTeCore")
        case .slstm: return ("sLSTMCell", "sLSTMCore")
        case .mlstm: return ("mLSTMCell", "mLSTMCore")
        case .xl: return ("XLCell", "XLCore")
        case .axon: return ("AxonCell", "AxonCore")
        }
    }

    static func parse(_ json: JSON, hiddenSize: Int) throws -> CoreConfig {
        guard json.objectPairs != nil else { throw CortexError.parse("cell is not a JSON object") }
        guard let tag = (json["cell_type"] ?? json["core_type"])?.string else {
            throw CortexError.parse("cell has no cell_type (or core_type)")
        }
        switch tag {
        case "lstm":
            let layers = json["num_layers"]?.int ?? 1
            guard layers == 1 else {
                throw CortexError.unsupported("lstm cell: num_layers \(layers) is not supported (cortexcore 0.1.6 supports num_layers == 1 only)")
            }
            if let p = json["proj_size"], !p.isNull, p.int != 0 {
                throw CortexError.unsupported("lstm cell: proj_size > 0 is not supported (as in cortexcore 0.1.6)")
            }
            let bias = try json.boolField("bias", default: true, core: tag)
            return .lstm(LSTMCore.Config(hiddenSize: hiddenSize, bias: bias))
        case "cconv":
            let k = try json.intField("kernel_size", default: 4, in: 0...1024, core: tag)
            return .causalConv1d(CausalConv1dCore.Config(
                hiddenSize: hiddenSize, kernelSize: k,
                bias: try json.boolField("causal_conv_bias", default: true, core: tag),
                channelMixing: try json.boolField("channel_mixing", default: false, core: tag)))
        case "agalite":
            var c = AGaLiTeCore.Config(hiddenSize: hiddenSize)
            c.heads = try json.intField("n_heads", default: 8, in: 1...4096, core: tag)
            if let hd = json["head_dim"], !hd.isNull { c.headDim = try json.intField("head_dim", default: 0, in: 1...65536, core: tag) }
            c.eta = try json.intField("eta", default: 6, in: 1...4096, core: tag)
            c.r = try json.intField("r", default: 2, in: 1...4096, core: tag)
            if let e = json["eps"], !e.isNull {
                guard let v = e.double, v >= 0 else { throw CortexError.parse("agalite cell: eps must be a number >= 0") }
                c.eps = Float(v)
            }
            return .agalite(c)
        case "slstm":
            var c = SLSTMCore.Config(
                hiddenSize: hiddenSize,
                heads: try json.intField("num_heads", default: 4, in: 1...4096, core: tag),
                convKernel: try json.intField("conv1d_kernel_size", default: 4, in: 0...1024, core: tag))
            c.axonLayer = try json.axonOption("use_axon_layer", config: "axon_layer_config", hiddenSize: hiddenSize, core: tag)
            return .slstm(c)
        case "mlstm":
            var c = MLSTMCore.Config(
                hiddenSize: hiddenSize,
                heads: try json.intField("num_heads", default: 4, in: 1...4096, core: tag),
                chunkSize: try json.intField("chunk_size", default: 64, in: 1...65536, core: tag),
                convKernel: try json.intField("conv1d_kernel_size", default: 4, in: 1...1024, core: tag))
            c.axonLayer = try json.axonOption("use_axon_layer", config: "axon_layer_config", hiddenSize: hiddenSize, core: tag)
            c.axonQKV = try json.axonOption("use_axon_qkv", config: "axon_qkv_config", hiddenSize: hiddenSize, core: tag)
            c.consistent = try json.mathField(core: tag)
            return .mlstm(c)
        case "axon":
            let c = try AxonCore.Config.parse(json, hiddenSize: hiddenSize, owner: "axon cell")
            guard c.outputSize == hiddenSize else {
                throw CortexError.unsupported("axon cell: out_dim \(c.outputSize) must equal hidden_size \(hiddenSize) in a block (the reference raises)")
            }
            return .axon(c)
        case "xl":
            var c = XLCore.Config(hiddenSize: hiddenSize)
            c.axonQKV = try json.axonOption("use_axon_qkv", config: "axon_qkv_config", hiddenSize: hiddenSize, core: tag)
            c.consistent = try json.mathField(core: tag)
            c.heads = try json.intField("n_heads", default: 4, in: 1...4096, core: tag)
            if let hd = json["head_dim"], !hd.isNull { c.headDim = try json.intField("head_dim", default: 0, in: 1...65536, core: tag) }
            c.memLen = try json.intField("mem_len", default: 128, in: 0...1_000_000, core: tag)
            c.useBias = try json.boolField("use_bias", default: true, core: tag)
            return .xl(c)
        default:
            throw CortexError.unsupported("unknown cell type '\(tag)' (supported: \(supportedTypes.joined(separator: ", ")))")
        }
    }
}

extension JSON {
    /// A `use_axon_*` flag with its optional `AxonConfig` field.
    func axonOption(_ flag: String, config: String, hiddenSize: Int, core: String) throws -> AxonLayerOption {
        guard try boolField(flag, default: false, core: core) else { return .off }
        guard let c = self[config], !c.isNull else { return .on(nil) }
        return .on(try AxonCore.Config.parse(c, hiddenSize: hiddenSize, owner: "\(core) cell: \(config)"))
    }

    /// Cortex's `cortex_math` option: "reference" (default: each path exactly as the
    /// reference computes it) or "consistent" (step and sequence mode agree).
    func mathField(core: String) throws -> Bool {
        guard let v = self["cortex_math"], !v.isNull else { return false }
        switch v.string {
        case "reference": return false
        case "consistent": return true
        default: throw CortexError.parse("\(core) cell: cortex_math must be \"reference\" or \"consistent\"")
        }
    }

    /// Optional boolean field of a core config (absent or null: `default`).
    func boolField(_ name: String, default value: Bool, core: String) throws -> Bool {
        guard let v = self[name], !v.isNull else { return value }
        guard let b = v.bool else { throw CortexError.parse("\(core) cell: \(name) must be a boolean") }
        return b
    }

    /// Optional integer field of a core config, required to lie in `range`.
    func intField(_ name: String, default value: Int, in range: ClosedRange<Int>, core: String) throws -> Int {
        guard let v = self[name], !v.isNull else { return value }
        guard let i = v.int else { throw CortexError.parse("\(core) cell: \(name) must be an integer") }
        guard range.contains(i) else {
            throw CortexError.unsupported("\(core) cell: \(name) \(i) is outside [\(range.lowerBound), \(range.upperBound)]")
        }
        return i
    }
}
