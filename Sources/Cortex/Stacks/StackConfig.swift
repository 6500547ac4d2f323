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
    /// cortexcore's `routed_adapter`: per-slot low-rank adapters on every Linear.
    public var routedAdapter: RoutedAdapterSpec? = nil
    /// Paths of fields the schema does not know (`StackSchema`): ignored, as the reference ignores them.
    public var ignoredFields: [String] = []

    /// Generous bounds that keep every size computation far from overflow.
    static let maxHidden = 1 << 20
    static let maxScaffolds = 4096

    public static func parse(_ json: JSON) throws -> StackConfig {
        guard json.objectPairs != nil else { throw CortexError.parse("stack config is not a JSON object") }
        let ignored: [String]
        do { ignored = try StackSchema.check(json) } catch let e as CortexError { throw e.prefixed("stack config") }
        guard let d = json["d_hidden"]?.int else { throw CortexError.parse("stack config: d_hidden must be an integer") }
        guard d >= 1, d <= maxHidden else { throw CortexError.unsupported("stack config: d_hidden \(d) is outside [1, \(maxHidden)]") }
        var postNorm = true
        if let p = json["post_norm"], !p.isNull {
            guard let b = p.bool else { throw CortexError.parse("stack config: post_norm must be a boolean") }
            postNorm = b
        }
        let routed: RoutedAdapterSpec?
        do { routed = try RoutedAdapterSpec.parse(json["routed_adapter"]) } catch let e as CortexError {
            throw e.prefixed("stack config")
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
        return StackConfig(dHidden: d, postNorm: postNorm, scaffolds: scaffolds, spelling: spelling, routedAdapter: routed,
                           ignoredFields: ignored)
    }
}

/// One scaffold (0.1.6: block) and what it wraps: a core (0.1.6: cell), a base
/// scaffold (Adapter) or expert scaffolds (Column). Cores get their hidden size from
/// the scaffold, as cortexcore's `get_cell_hidden_size` decides it.
public indirect enum ScaffoldConfig: Sendable {
    case passThrough(core: CoreConfig)
    /// PreUp / PreUpGated: the core at `inner = int(proj_factor · d_hidden)`.
    case preUp(core: CoreConfig, inner: Int, activateCoreInput: Bool, gated: Bool)
    /// PostUp / PostUpGated: the core at d_hidden, an FFN of width `inner`.
    case postUp(core: CoreConfig, inner: Int, gated: Bool)
    case adapter(base: ScaffoldConfig, bottleneck: Int, perChannelGate: Bool, activation: AdapterScaffold.Activation)
    case column(experts: [ScaffoldConfig], router: RouterConfig)

    static let types = ["passthrough", "preup", "preup_gated", "postup", "postup_gated", "adapter", "column"]

    /// Class name, used in state keys, in 0.1.6's or the seed's spelling.
    func className(_ spelling: StackConfig.Spelling) -> String {
        let base: String
        switch self {
        case .passThrough: base = "PassThrough"
        case .preUp(_, _, _, let gated): base = gated ? "PreUpGated" : "PreUp"
        case .postUp(_, _, let gated): base = gated ? "PostUpGated" : "PostUp"
        case .adapter: base = "Adapter"
        case .column: base = "Column"
        }
        return base + (spelling == .blocks ? "Block" : "Scaffold")
    }

    static func parse(_ json: JSON, dHidden: Int, depth: Int = 0) throws -> ScaffoldConfig {
        guard json.objectPairs != nil else { throw CortexError.parse("not a JSON object") }
        guard depth < 8 else { throw CortexError.unsupported("scaffolds nest deeper than 8 levels") }
        guard let tag = (json["block_type"] ?? json["scaffold_type"])?.string else {
            throw CortexError.parse("missing block_type (or scaffold_type)")
        }
        /// The wrapped core, parsed at the hidden size this scaffold gives it.
        func core(hiddenSize: Int) throws -> CoreConfig {
            guard let c = json["cell"] ?? json["core"], !c.isNull else {
                throw CortexError.parse("block '\(tag)' has no cell (or core)")
            }
            return try CoreConfig.parse(c, hiddenSize: hiddenSize)
        }
        /// `int(proj_factor · d_hidden)`, as Python truncates it.
        func inner(default value: Double) throws -> Int {
            var f = value
            if let p = json["proj_factor"], !p.isNull {
                guard let v = p.double else { throw CortexError.parse("\(tag): proj_factor must be a number") }
                guard v > 0, v <= 64 else { throw CortexError.unsupported("\(tag): proj_factor \(v) is outside (0, 64]") }
                f = v
            }
            let n = Int((f * Double(dHidden)).rounded(.towardZero))
            guard n >= 1 else { throw CortexError.unsupported("\(tag): int(proj_factor × d_hidden) is 0") }
            return n
        }
        switch tag {
        case "passthrough":
            return .passThrough(core: try core(hiddenSize: dHidden))
        case "preup", "preup_gated":
            let d = try inner(default: 2.0)
            let act = try json.boolField("activate_cell_input", default: true, core: tag)
            return .preUp(core: try core(hiddenSize: d), inner: d, activateCoreInput: act, gated: tag == "preup_gated")
        case "postup", "postup_gated":
            let d = try inner(default: 1.5)
            return .postUp(core: try core(hiddenSize: dHidden), inner: d, gated: tag == "postup_gated")
        case "adapter":
            guard let b = json["base_block"] ?? json["base_scaffold"], !b.isNull else {
                throw CortexError.parse("adapter: base_block (or base_scaffold) is missing")
            }
            let base: ScaffoldConfig
            do { base = try parse(b, dHidden: dHidden, depth: depth + 1) } catch let e as CortexError { throw e.prefixed("adapter base_block") }
            switch base {
            case .column, .adapter:
                // cortexcore's AdapterBlock rebuilds the base's cell and fails without one.
                throw CortexError.unsupported("adapter: base_block must be a scaffold with a cell (not a column or adapter), as in cortexcore")
            default: break
            }
            var activation = "gelu"
            if let a = json["activation"], !a.isNull {
                guard let s = a.string else { throw CortexError.parse("adapter: activation must be a string") }
                activation = s
            }
            return .adapter(base: base, bottleneck: try json.intField("bottleneck", default: 64, in: 1...1_048_576, core: tag),
                            perChannelGate: try json.boolField("per_channel_gate", default: false, core: tag),
                            activation: .named(activation))
        case "column":
            guard let list = json["experts"]?.array, !list.isEmpty else {
                throw CortexError.parse("column: experts must be a non-empty list")
            }
            guard list.count <= 64 else { throw CortexError.unsupported("column: more than 64 experts") }
            var experts: [ScaffoldConfig] = []
            for (i, item) in list.enumerated() {
                do { experts.append(try parse(item, dHidden: dHidden, depth: depth + 1)) } catch let e as CortexError {
                    throw e.prefixed("column experts[\(i)]")
                }
            }
            return .column(experts: experts, router: try RouterConfig.parse(json["router"], experts: experts.count))
        default:
            throw CortexError.unsupported("unknown block type '\(tag)' (supported: \(types.joined(separator: ", ")))")
        }
    }

    /// Build this scaffold with its weights under `prefix` (e.g. "blocks.0.").
    func build(weights: WeightSource, prefix: String, dHidden: Int, spelling: StackConfig.Spelling) throws -> any RecurrentModule {
        func coreName(_ c: CoreConfig) -> String { spelling == .blocks ? c.kind.classNames.blocks : c.kind.classNames.scaffolds }
        switch self {
        case .passThrough(let c):
            return PassThroughScaffold(core: try c.build(weights, prefix + "cell."), coreName: coreName(c))
        case .preUp(let c, let inner, let act, let gated):
            let activate = act && !c.takesRawPreUpInput
            return try PreUpScaffold(core: try c.build(weights, prefix + "cell."), coreName: coreName(c),
                                     hidden: dHidden, inner: inner, activateCoreInput: activate, gated: gated,
                                     weights: weights, prefix: prefix)
        case .postUp(let c, let inner, let gated):
            return try PostUpScaffold(core: try c.build(weights, prefix + "cell."), coreName: coreName(c),
                                      hidden: dHidden, inner: inner, gated: gated, weights: weights, prefix: prefix)
        case .adapter(let base, let bottleneck, let perChannel, let activation):
            let inner = try base.build(weights: weights, prefix: prefix + "wrapped_block.", dHidden: dHidden, spelling: spelling)
            return try AdapterScaffold(base: inner, hidden: dHidden, bottleneck: bottleneck, perChannelGate: perChannel,
                                       activation: activation, weights: weights, prefix: prefix)
        case .column(let experts, let router):
            var built: [any RecurrentModule] = []
            var keys: [String] = []
            for (i, e) in experts.enumerated() {
                do {
                    built.append(try e.build(weights: weights, prefix: prefix + "experts.\(i).", dHidden: dHidden, spelling: spelling))
                } catch let err as CortexError {
                    throw err.prefixed("expert \(i)")
                }
                keys.append("expert_\(e.className(spelling))_\(i)")
            }
            return try ColumnScaffold(experts: built, expertKeys: keys, hidden: dHidden, router: router,
                                      weights: weights, prefix: prefix)
        }
    }
}

extension RouterConfig {
    /// cortexcore's `RouterConfig` JSON (absent: all defaults).
    static func parse(_ json: JSON?, experts: Int) throws -> RouterConfig {
        var r = RouterConfig()
        guard let json, !json.isNull else { return r }
        guard json.objectPairs != nil else { throw CortexError.parse("column router: not a JSON object") }
        let core = "column router"
        func optionalInt(_ name: String) throws -> Int? {
            guard let v = json[name], !v.isNull else { return nil }
            return try json.intField(name, default: 1, in: 1...1_048_576, core: core)
        }
        func positive(_ name: String, _ value: inout Double) throws {
            guard let v = json[name], !v.isNull else { return }
            guard let d = v.double, d > 0, d.isFinite else { throw CortexError.parse("\(core): \(name) must be a number > 0") }
            value = d
        }
        r.dKey = try optionalInt("d_key")
        r.topK = try optionalInt("top_k")
        r.dKeyLocal = try optionalInt("d_key_local")
        try positive("temperature", &r.temperature)
        try positive("local_temperature", &r.localTemperature)
        if let v = json["whisper_lambda"], !v.isNull {
            guard let d = v.double, d >= 0, d.isFinite else { throw CortexError.parse("\(core): whisper_lambda must be a number >= 0") }
            r.whisperLambda = d
        }
        r.useSqrtScale = try json.boolField("use_sqrt_scale", default: true, core: core)
        r.centerRefine = try json.boolField("center_refine", default: true, core: core)
        r.restrictToTopK = try json.boolField("restrict_to_topk", default: true, core: core)
        return r
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
    /// How field errors name their owner: "lstm cell" for a cell type, else as given.
    static func owner(_ core: String) -> String {
        CoreKinds.named(core) != nil ? core + " cell" : core
    }

    func boolField(_ name: String, default value: Bool, core: String) throws -> Bool {
        guard let v = self[name], !v.isNull else { return value }
        guard let b = v.bool else { throw CortexError.parse("\(JSON.owner(core)): \(name) must be a boolean") }
        return b
    }

    /// Optional integer field of a core config, required to lie in `range`.
    func intField(_ name: String, default value: Int, in range: ClosedRange<Int>, core: String) throws -> Int {
        guard let v = self[name], !v.isNull else { return value }
        let owner = JSON.owner(core)
        guard let i = v.int else { throw CortexError.parse("\(owner): \(name) must be an integer") }
        guard range.contains(i) else {
            throw CortexError.unsupported("\(owner): \(name) \(i) is outside [\(range.lowerBound), \(range.upperBound)]")
        }
        return i
    }
}
