/// The typed schema of a cortexcore stack config (0.1.6's `cortex/config.py`, plus
/// Cortex's own `cortex_math` and `cortex_srht`). Every field the reference declares
/// has one JSON type here, checked before the config is read: `"num_layers": "2"`,
/// `"num_layers": null` or `"dropout": "0.5"` are refused with the field's path instead
/// of silently falling back to a default.
///
/// Unknown fields are accepted and reported, not refused: the reference's cell, block
/// and router configs keep unknown fields (`extra="allow"`) and its stack and
/// routed-adapter configs drop them, so a model trained with a stray field was built
/// without it. `StackConfig.ignoredFields` lists them; model info shows them.
///
/// Fields that only matter for training (dropouts, `compile_blocks`, init scales,
/// `gru_bias`, `cuda_seq_threshold`, ...) are type-checked and then ignored. A cell's
/// `hidden_size` is too: the block decides the cell's size, as the reference does.
enum StackSchema {
    enum FieldType {
        /// An integral JSON number within the bounds.
        case int(min: Int?, max: Int? = nil)
        /// Any finite JSON number within the bounds (`open`: the minimum is excluded).
        case number(min: Double? = nil, open: Bool = false, max: Double? = nil)
        case bool
        case string
        case cell
        /// An AxonConfig whatever its cell_type says (it may have none).
        case axonConfig
        case block
        case blocks
        case router
        case routedAdapter

        var name: String {
            switch self {
            case .int: return "an integer"
            case .number: return "a number"
            case .bool: return "a boolean"
            case .string: return "a string"
            case .cell, .axonConfig, .block, .router, .routedAdapter: return "an object"
            case .blocks: return "a list"
            }
        }
    }

    struct Field {
        let type: FieldType
        var nullable = false
        var required = false
    }

    typealias Fields = [String: Field]

    static func f(_ t: FieldType, nullable: Bool = false, required: Bool = false) -> Field {
        Field(type: t, nullable: nullable, required: required)
    }

    /// Dropout-like probabilities: `ge=0, le=1`.
    static let probability = f(.number(min: 0, max: 1))
    /// An `AxonConfig` inside another cell (`axon_layer_config`, `axon_qkv_config`).
    static let axonConfig = f(.axonConfig, nullable: true)

    static let stack: Fields = [
        "d_hidden": f(.int(min: 1), required: true),
        "blocks": f(.blocks), "scaffolds": f(.blocks),
        "post_norm": f(.bool),
        "compile_blocks": f(.bool), "compile_scaffolds": f(.bool),
        "routed_adapter": f(.routedAdapter, nullable: true),
    ]

    static let routedAdapter: Fields = [
        "enabled": f(.bool),
        "num_slots": f(.int(min: 1), required: true),
        "rank": f(.int(min: 1)),
        "alpha": f(.number(min: 0, open: true), nullable: true),
        "dropout": probability,
        "freeze_base": f(.bool),
        "trunk_lr_mult": f(.number(min: 0)),
        "require_route_ids": f(.bool),
    ]

    static let router: Fields = [
        "d_key": f(.int(min: 1), nullable: true),
        "temperature": f(.number(min: 0, open: true)),
        "top_k": f(.int(min: 1), nullable: true),
        "use_sqrt_scale": f(.bool),
        "init_scale_wq": f(.number()), "init_scale_wk": f(.number()),
        "d_key_local": f(.int(min: 1), nullable: true),
        "local_temperature": f(.number(min: 0, open: true)),
        "whisper_lambda": f(.number(min: 0)),
        "center_refine": f(.bool),
        "restrict_to_topk": f(.bool),
    ]

    /// Fields every block has; the tag field is checked by the parser.
    static let blockCommon: Fields = [
        "block_type": f(.string), "scaffold_type": f(.string),
        "cell": f(.cell, nullable: true), "core": f(.cell, nullable: true),
    ]

    static let blocks: [String: Fields] = {
        let upFactor = f(.number(min: 0, open: true))
        return [
            "passthrough": [:],
            "preup": ["proj_factor": upFactor, "activate_cell_input": f(.bool), "dropout": probability],
            "preup_gated": ["proj_factor": upFactor, "gru_bias": f(.number()), "activate_cell_input": f(.bool),
                            "dropout": probability],
            "postup": ["proj_factor": upFactor, "dropout": probability],
            "postup_gated": ["proj_factor": upFactor, "gru_bias": f(.number()), "dropout": probability],
            "adapter": ["base_block": f(.block), "base_scaffold": f(.block), "bottleneck": f(.int(min: 1)),
                        "dropout": probability, "per_channel_gate": f(.bool), "activation": f(.string)],
            "column": ["experts": f(.blocks, required: true), "router": f(.router), "alpha_init": f(.number(min: 0))],
        ]
    }()

    /// Fields every cell has.
    static let cellCommon: Fields = [
        "cell_type": f(.string), "core_type": f(.string),
        "hidden_size": f(.int(min: 1), nullable: true),
    ]

    /// Each core's fields, from its `CoreKind`.
    static let cells: [String: Fields] = Dictionary(uniqueKeysWithValues: CoreKinds.all.map { ($0.tag, $0.schema) })

    /// Check a stack config against the schema. Returns the paths of unknown fields
    /// (ignored, as the reference ignores them); throws on the first mistyped,
    /// null-where-not-nullable or missing required field (`.parse`) or value outside
    /// the reference's bounds (`.unsupported`, as for every value Cortex cannot run).
    static func check(_ json: JSON) throws -> [String] {
        var ignored: [String] = []
        try checkObject(json, fields: stack, path: "", ignored: &ignored)
        return ignored
    }

    private static func checkObject(_ json: JSON, fields: Fields, extra: Fields = [:], path: String,
                                    ignored: inout [String]) throws {
        guard let pairs = json.objectPairs else { throw CortexError.parse("\(describe(path)) must be an object") }
        for (key, value) in pairs {
            let p = path.isEmpty ? key : "\(path).\(key)"
            guard let field = fields[key] ?? extra[key] else { ignored.append(p); continue }
            try checkValue(value, field: field, path: p, ignored: &ignored)
        }
        for (key, field) in fields.merging(extra, uniquingKeysWith: { a, _ in a }) where field.required {
            if json[key] == nil { throw CortexError.parse("\(describe(path.isEmpty ? key : "\(path).\(key)")) is required") }
        }
    }

    private static func describe(_ path: String) -> String { path.isEmpty ? "the stack config" : path }

    private static func checkValue(_ value: JSON, field: Field, path: String, ignored: inout [String]) throws {
        if value.isNull {
            guard field.nullable else { throw CortexError.parse("\(path) must be \(field.type.name), not null") }
            return
        }
        func wrongType() -> CortexError {
            let got: String
            switch value {
            case .null: got = "null"
            case .bool: got = "a boolean"
            case .number: got = "a number"
            case .string(let s): got = "a string (\"\(s.prefix(32))\")"
            case .array: got = "a list"
            case .object: got = "an object"
            }
            return CortexError.parse("\(path) must be \(field.type.name), got \(got)")
        }
        switch field.type {
        case .int(let lo, let hi):
            guard let i = value.int else {
                if let d = value.double { throw CortexError.parse("\(path) must be an integer, got \(d)") }
                throw wrongType()
            }
            if let lo, i < lo { throw CortexError.unsupported("\(path) is \(i), must be >= \(lo)") }
            if let hi, i > hi { throw CortexError.unsupported("\(path) is \(i), must be <= \(hi)") }
        case .number(let lo, let open, let hi):
            guard let d = value.double else { throw wrongType() }
            if let lo, open ? !(d > lo) : !(d >= lo) {
                throw CortexError.unsupported("\(path) is \(d), must be \(open ? ">" : ">=") \(lo)")
            }
            if let hi, d > hi { throw CortexError.unsupported("\(path) is \(d), must be <= \(hi)") }
        case .bool:
            guard value.bool != nil else { throw wrongType() }
        case .string:
            guard value.string != nil else { throw wrongType() }
        case .routedAdapter:
            try checkObject(value, fields: routedAdapter, path: path, ignored: &ignored)
        case .router:
            try checkObject(value, fields: router, path: path, ignored: &ignored)
        case .blocks:
            guard let list = value.array else { throw wrongType() }
            for (i, item) in list.enumerated() {
                try checkValue(item, field: f(.block), path: "\(path)[\(i)]", ignored: &ignored)
            }
        case .block:
            guard value.objectPairs != nil else { throw wrongType() }
            let tag = (value["block_type"] ?? value["scaffold_type"])?.string ?? ""
            // An unknown or missing tag is left to the parser, which names the supported types.
            try checkObject(value, fields: blockCommon, extra: blocks[tag] ?? [:], path: path, ignored: &ignored)
        case .cell:
            guard value.objectPairs != nil else { throw wrongType() }
            let tag = (value["cell_type"] ?? value["core_type"])?.string ?? ""
            try checkObject(value, fields: cellCommon, extra: cells[tag] ?? [:], path: path, ignored: &ignored)
        case .axonConfig:
            guard value.objectPairs != nil else { throw wrongType() }
            try checkObject(value, fields: cellCommon, extra: AxonCore.schema, path: path, ignored: &ignored)
        }
    }
}
