/// cortexcore 0.1.6's auto builders (`build_cortex_auto_config` with
/// `build_column_auto_config`): a stack of Column layers from a recipe. The result is
/// the `CortexStackConfig` JSON cortexcore itself dumps for the same recipe — every
/// field, in pydantic's order — so a stack built here and one built in PyTorch share one
/// config, and the PyTorch module's `state_dict()` loads into it.
///
/// Recipe (JSON object):
///
///     d_hidden        required
///     num_layers      default 2
///     pattern         "AXMS" (default), or one pattern per layer; tokens A, X, X^, M,
///                     M^, S, S^, L, C, Ag (concatenated), or custom tokens separated by
///                     spaces or commas
///     layers          instead of pattern (the seed's form): one list of experts per
///                     layer, each a block config or a cell (the seed's `CellConfig`):
///                     {"cell_type": "xl", "core": {...}, "scaffold": {...}} — the cell's
///                     default scaffold (as the tokens: Axon, XL, sLSTM, AGaLiTe in
///                     PostUpGated, mLSTM in PreUpGated, LSTM and conv in PassThrough) with
///                     the given core and scaffold fields
///     custom_map      {token: block config}; "<token>^" axonifies a custom mLSTM, XL or sLSTM
///     router          RouterConfig fields for every Column
///     post_norm, compile_blocks
///     overrides       partial configs applied by type wherever they match, as
///                     `override_global_configs`: {"cell_type": "xl", "mem_len": 64},
///                     {"block_type": "postup_gated", ...}, {"config_type": "router", ...}
public enum AutoStack {
    /// The stack config for `recipe` (a `CortexStackConfig` dump, ready for `Model`).
    public static func config(recipe: JSON) throws -> JSON {
        do { return try build(recipe) } catch let e as CortexError { throw e.prefixed("auto stack") }
    }

    private static func build(_ recipe: JSON) throws -> JSON {
        guard recipe.objectPairs != nil else { throw CortexError.parse("the recipe is not a JSON object") }
        let known: Set<String> = ["d_hidden", "num_layers", "pattern", "layers", "custom_map", "router", "post_norm",
                                  "compile_blocks", "overrides", "routed_adapter"]
        if let extra = recipe.objectPairs?.first(where: { !known.contains($0.0) }) {
            throw CortexError.parse("unknown recipe field '\(extra.0)' (known: \(known.sorted().joined(separator: ", ")))")
        }
        guard let d = recipe["d_hidden"]?.int, d >= 1, d <= StackConfig.maxHidden else {
            throw CortexError.parse("d_hidden must be an integer in [1, \(StackConfig.maxHidden)]")
        }
        let defaults = try Defaults.shared()
        var customMap: [String: JSON] = [:]
        if let m = recipe["custom_map"], !m.isNull {
            guard let pairs = m.objectPairs else { throw CortexError.parse("custom_map must be an object") }
            for (token, cfg) in pairs { customMap[token] = try defaults.completeBlock(cfg, at: "custom_map[\(token)]") }
        }
        let router = try defaults.completeRouter(recipe["router"])

        // Experts per layer: explicit lists, or patterns.
        var layers: [[JSON]] = []
        if let l = recipe["layers"], !l.isNull {
            guard let list = l.array, !list.isEmpty else { throw CortexError.parse("layers must be a non-empty list") }
            if let n = recipe["num_layers"]?.int, n != list.count {
                throw CortexError.parse("layers has \(list.count) entries but num_layers is \(n)")
            }
            for (i, layer) in list.enumerated() {
                guard let experts = layer.array, !experts.isEmpty else {
                    throw CortexError.parse("layers[\(i)] must be a non-empty list of block configs")
                }
                layers.append(try experts.enumerated().map { try defaults.expert($1, at: "layers[\(i)][\($0)]") })
            }
        } else {
            let n = try recipe.intField("num_layers", default: 2, in: 1...4096, core: "auto stack")
            var patterns: [String]
            switch recipe["pattern"] {
            case .none, .some(.null): patterns = Array(repeating: "AXMS", count: n)
            case .some(.string(let p)): patterns = Array(repeating: p, count: n)
            case .some(.array(let a)):
                patterns = try a.map { guard let s = $0.string else { throw CortexError.parse("pattern list entries must be strings") }; return s }
                guard patterns.count == n else { throw CortexError.parse("pattern list length \(patterns.count) != num_layers \(n)") }
            default: throw CortexError.parse("pattern must be a string or a list of strings")
            }
            for p in patterns { layers.append(try defaults.experts(pattern: p.isEmpty ? "AXMS" : p, customMap: customMap)) }
        }
        var overrides: [JSON] = []
        if let o = recipe["overrides"], !o.isNull {
            guard let list = o.array else { throw CortexError.parse("overrides must be a list") }
            overrides = try list.enumerated().map { try defaults.completeOverride($1, at: "overrides[\($0)]") }
        }
        let blocks: [JSON] = layers.map { experts in
            let column = defaults.overlay(defaults.blocks["column"] ?? .null,
                                          [("experts", .array(experts)), ("router", router)])
            return Defaults.applyOverrides(column, overrides, isRouter: false)
        }
        let config = JSON.object([
            ("blocks", .array(blocks)),
            ("d_hidden", .number(Double(d))),
            ("post_norm", .bool(try recipe.boolField("post_norm", default: true, core: "auto stack"))),
            ("compile_blocks", .bool(try recipe.boolField("compile_blocks", default: true, core: "auto stack"))),
            ("routed_adapter", try routedAdapter(recipe["routed_adapter"])),
        ])
        _ = try StackConfig.parse(config)  // what we hand out must load
        return config
    }

    /// The recipe's `routed_adapter`, completed with `RoutedAdapterConfig`'s defaults in
    /// its field order (null when absent).
    static func routedAdapter(_ json: JSON?) throws -> JSON {
        guard let json, !json.isNull else { return .null }
        _ = try RoutedAdapterSpec.parse(json)  // validates
        let defaults: [(String, JSON)] = [
            ("enabled", .bool(true)), ("num_slots", .null), ("rank", .number(4)), ("alpha", .null),
            ("dropout", .number(0)), ("freeze_base", .bool(false)), ("trunk_lr_mult", .number(1)),
            ("require_route_ids", .bool(true)),
        ]
        let given = Dictionary(json.objectPairs ?? [], uniquingKeysWith: { $1 })
        if let extra = given.keys.first(where: { k in !defaults.contains { $0.0 == k } }) {
            throw CortexError.parse("routed_adapter: unknown field '\(extra)'")
        }
        return .object(defaults.map { ($0.0, given[$0.0] ?? $0.1) })
    }

    /// The reference's defaults and tokens (ReferenceDefaults.swift), parsed once.
    struct Defaults: Sendable {
        let cells: [String: JSON]
        let blocks: [String: JSON]
        let router: JSON
        let tokens: [String: JSON]
        /// Built-in tokens, longest first (the reference's greedy match order).
        let tokenOrder: [String]

        static func shared() throws -> Defaults {
            let doc = try JSON.parse(ReferenceDefaults.json)
            func table(_ key: String) -> [String: JSON] {
                Dictionary(uniqueKeysWithValues: doc[key]?.objectPairs ?? [])
            }
            let tokens = table("tokens")
            let order = (doc["tokens"]?.objectPairs ?? []).map(\.0).sorted { $0.count > $1.count }
            return Defaults(cells: table("cells"), blocks: table("blocks"), router: doc["router"] ?? .null,
                            tokens: tokens, tokenOrder: order)
        }

        /// `template`'s fields in order, each replaced by `given`'s when present, then
        /// `given`'s other fields (pydantic keeps extra fields, after the declared ones).
        func overlay(_ template: JSON, _ given: [(String, JSON)]) -> JSON {
            let base = template.objectPairs ?? []
            let keys = Set(base.map(\.0))
            var out = base.map { k, v in (k, given.last { $0.0 == k }?.1 ?? v) }
            out += given.filter { !keys.contains($0.0) }
            return .object(out)
        }

        func completeCell(_ json: JSON, at path: String) throws -> JSON {
            if json.isNull { return .null }
            guard let pairs = json.objectPairs, let tag = (json["cell_type"] ?? json["core_type"])?.string else {
                throw CortexError.parse("\(path): a cell config needs a cell_type")
            }
            guard let template = cells[tag] else {
                throw CortexError.unsupported("\(path): unknown cell type '\(tag)' (known: \(cells.keys.sorted().joined(separator: ", ")))")
            }
            var given = pairs
            for key in ["axon_layer_config", "axon_qkv_config"] {
                if let i = given.firstIndex(where: { $0.0 == key }), !given[i].1.isNull {
                    guard let ax = cells["axon"], let p = given[i].1.objectPairs else {
                        throw CortexError.parse("\(path).\(key) must be an object")
                    }
                    given[i].1 = overlay(ax, p)
                }
            }
            return overlay(template, given)
        }

        func completeBlock(_ json: JSON, at path: String) throws -> JSON {
            guard let pairs = json.objectPairs, let tag = (json["block_type"] ?? json["scaffold_type"])?.string else {
                throw CortexError.parse("\(path): a block config needs a block_type")
            }
            guard let template = blocks[tag] else {
                throw CortexError.unsupported("\(path): unknown block type '\(tag)' (known: \(blocks.keys.sorted().joined(separator: ", ")))")
            }
            var given = pairs
            for i in given.indices {
                switch given[i].0 {
                case "cell", "core": given[i].1 = try completeCell(given[i].1, at: path + ".cell")
                case "base_block": given[i].1 = try completeBlock(given[i].1, at: path + ".base_block")
                case "experts":
                    guard let list = given[i].1.array else { throw CortexError.parse("\(path).experts must be a list") }
                    given[i].1 = .array(try list.enumerated().map { try completeBlock($1, at: "\(path).experts[\($0)]") })
                case "router": given[i].1 = try completeRouter(given[i].1)
                default: break
                }
            }
            return overlay(template, given)
        }

        /// A layer entry: a block config, or a cell in its default scaffold.
        func expert(_ json: JSON, at path: String) throws -> JSON {
            if json["block_type"] != nil || json["scaffold_type"] != nil { return try completeBlock(json, at: path) }
            guard let pairs = json.objectPairs, let tag = json["cell_type"]?.string else {
                throw CortexError.parse("\(path): an expert is a block config (block_type) or a cell (cell_type)")
            }
            let token = ["axon": "A", "xl": "X", "mlstm": "M", "slstm": "S", "lstm": "L", "cconv": "C", "agalite": "Ag"][tag]
            guard let token, let base = tokens[token], let blockPairs = base.objectPairs else {
                throw CortexError.unsupported("\(path): unknown cell type '\(tag)'")
            }
            if let extra = pairs.first(where: { !["cell_type", "core", "scaffold"].contains($0.0) }) {
                throw CortexError.parse("\(path): unknown cell field '\(extra.0)' (cell_type, core, scaffold)")
            }
            var cell = json["core"] ?? .object([])
            guard let corePairs = cell.objectPairs else { throw CortexError.parse("\(path).core must be an object") }
            cell = .object([("cell_type", .string(tag))] + corePairs.filter { $0.0 != "cell_type" && $0.0 != "core_type" })
            var block = blockPairs.filter { $0.0 != "cell" }
            if let sc = json["scaffold"], !sc.isNull {
                guard let scPairs = sc.objectPairs else { throw CortexError.parse("\(path).scaffold must be an object") }
                block = scPairs.isEmpty ? block : scPairs.map { ($0.0 == "scaffold_type" ? "block_type" : $0.0, $0.1) }
                if !block.contains(where: { $0.0 == "block_type" }), let t = base["block_type"] { block.insert(("block_type", t), at: 0) }
            }
            return try completeBlock(.object([("cell", cell)] + block), at: path)
        }

        func completeRouter(_ json: JSON?) throws -> JSON {
            guard let json, !json.isNull else { return router }
            guard let pairs = json.objectPairs else { throw CortexError.parse("router must be an object") }
            return overlay(router, pairs)
        }

        /// An override keeps only the fields it sets (pydantic's `model_fields_set`), with
        /// nested configs completed; its type tag says what it matches.
        func completeOverride(_ json: JSON, at path: String) throws -> JSON {
            guard let pairs = json.objectPairs else { throw CortexError.parse("\(path) must be an object") }
            var fields = pairs
            for i in fields.indices {
                switch fields[i].0 {
                case "cell": fields[i].1 = try completeCell(fields[i].1, at: path + ".cell")
                case "base_block": fields[i].1 = try completeBlock(fields[i].1, at: path + ".base_block")
                case "router": fields[i].1 = try completeRouter(fields[i].1)
                case "axon_layer_config", "axon_qkv_config":
                    if !fields[i].1.isNull, let p = fields[i].1.objectPairs, let ax = cells["axon"] { fields[i].1 = overlay(ax, p) }
                default: break
                }
            }
            if json["config_type"]?.string == "router" {
                return .object(fields.filter { $0.0 != "config_type" })
            }
            guard json["cell_type"]?.string != nil || json["block_type"]?.string != nil else {
                throw CortexError.parse("\(path): an override needs a cell_type, block_type or \"config_type\": \"router\"")
            }
            return .object(fields)
        }

        /// `_apply_overrides_model`: the first override of the node's type replaces the
        /// fields it sets (and stops there); otherwise recurse into nested configs.
        static func applyOverrides(_ node: JSON, _ overrides: [JSON], isRouter: Bool) -> JSON {
            guard let pairs = node.objectPairs else { return node }
            for ov in overrides where matches(node, ov, isRouter: isRouter) {
                let set = (ov.objectPairs ?? []).filter { !["cell_type", "block_type"].contains($0.0) }
                let keys = Set(set.map(\.0))
                var out = pairs.map { k, v in (k, set.last { $0.0 == k }?.1 ?? v) }
                out += set.filter { k, _ in !pairs.contains { $0.0 == k } && keys.contains(k) }
                return .object(out)
            }
            return .object(pairs.map { k, v in
                switch v {
                case .object: return (k, applyOverrides(v, overrides, isRouter: k == "router"))
                case .array(let a): return (k, .array(a.map { applyOverrides($0, overrides, isRouter: false) }))
                default: return (k, v)
                }
            })
        }

        private static func matches(_ node: JSON, _ ov: JSON, isRouter: Bool) -> Bool {
            if isRouter { return ov["cell_type"] == nil && ov["block_type"] == nil }
            if let t = ov["cell_type"]?.string { return node["cell_type"]?.string == t }
            if let t = ov["block_type"]?.string { return node["block_type"]?.string == t }
            return false
        }

        /// `build_column_auto_config`'s experts for one pattern.
        func experts(pattern: String, customMap: [String: JSON]) throws -> [JSON] {
            let parsed = try parseTokens(pattern)
            guard !parsed.isEmpty else { throw CortexError.parse("pattern '\(pattern)' produced no experts") }
            return try parsed.map { tok in
                if let c = customMap[tok] { return c }
                let axon = tok.hasSuffix("^")
                let base = String(tok.reversed().drop { $0 == "^" }.reversed())
                if let c = customMap[base] { return axon ? axonify(c) : c }
                if let t = tokens[tok] { return t }
                throw CortexError.parse("unknown token '\(tok)'. Use A|C|L|M|S|X|Ag (with ^ for M/X/S) or a custom_map entry")
            }
        }

        /// `_parse_tokens`: several parts split on spaces/commas, or one run matched
        /// greedily against the built-in tokens only.
        func parseTokens(_ pattern: String) throws -> [String] {
            let space: (Character) -> Bool = { $0 == " " || $0 == "\t" || $0 == "\n" || $0 == "\r" }
            let spaced = String(pattern.map { $0 == "," ? " " : $0 })
            let s = String(spaced.drop(while: space).reversed().drop(while: space).reversed())
            let parts = s.split(whereSeparator: space).map(String.init)
            if parts.count != 1 { return parts }
            var out: [String] = []
            var rest = Substring(s)
            while !rest.isEmpty {
                guard let tok = tokenOrder.first(where: { rest.hasPrefix($0) }) else {
                    throw CortexError.parse("unknown token at position \(s.count - rest.count): '\(rest.first.map(String.init) ?? "")'")
                }
                out.append(tok)
                rest = rest.dropFirst(tok.count)
            }
            return out
        }

        /// A custom entry with "^": its cell's `use_axon_*` flags turn on (`CoreKind.axonFlags`:
        /// mLSTM both, XL use_axon_qkv, sLSTM use_axon_layer; other cells unchanged).
        func axonify(_ block: JSON) -> JSON {
            guard let pairs = block.objectPairs, let cell = block["cell"], let tag = cell["cell_type"]?.string,
                  let flags = CoreKinds.named(tag)?.axonFlags, !flags.isEmpty else { return block }
            let newCell = JSON.object((cell.objectPairs ?? []).map { k, v in (k, flags.contains(k) ? .bool(true) : v) })
            return .object(pairs.map { k, v in (k, k == "cell" ? newCell : v) })
        }
    }
}
