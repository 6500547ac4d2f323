/// A kind of core as a stack config names it (`"cell_type"`, or the seed's
/// `"core_type"`). Everything the stack library needs about a core lives in the core's
/// own file, in an extension conforming it to `CoreKind`: its tag, its class names
/// (state keys), its config schema, how its config is read and how it is built. The
/// schema, the parser, the builder and the auto-stack builder all read `CoreKinds.all`.
///
/// Adding a core: write its file (the module and `extension NewCore: CoreKind`), add
/// its type to `CoreKinds.all`, and give it a golden (scripts/goldens/cores.py); the
/// golden tests find it by its manifest.
protocol CoreKind {
    /// The config tag, e.g. "lstm".
    static var tag: String { get }
    /// Class names used in state keys: cortexcore 0.1.6's ("LSTMCell") and the seed's
    /// spelling ("LSTMCore").
    static var classNames: (blocks: String, scaffolds: String) { get }
    /// The fields of the reference's config class, with their JSON types and bounds.
    static var schema: StackSchema.Fields { get }
    /// The `use_axon_*` flags the auto builder's `^` tokens turn on (none by default).
    static var axonFlags: [String] { get }
    /// Read a config (already checked against `schema`) for a core of `hiddenSize`
    /// (the block decides it).
    static func parseCore(_ json: JSON, hiddenSize: Int) throws -> CoreConfig
}

extension CoreKind {
    static var axonFlags: [String] { [] }
}

enum CoreKinds {
    /// Immutable metatypes: safe to share.
    nonisolated(unsafe) static let all: [any CoreKind.Type] = [
        LSTMCore.self, CausalConv1dCore.self, AGaLiTeCore.self, SLSTMCore.self, MLSTMCore.self, XLCore.self, AxonCore.self,
    ]

    static func named(_ tag: String) -> (any CoreKind.Type)? { all.first { $0.tag == tag } }
    static var tags: [String] { all.map { $0.tag } }
}

/// A parsed core config: its kind and how to build it with weights under a prefix.
/// (`@unchecked`: `kind` is an immutable metatype.)
public struct CoreConfig: @unchecked Sendable {
    let kind: any CoreKind.Type
    let build: @Sendable (WeightSource, String) throws -> any RecurrentModule
    /// In a PreUp block the core takes the raw up-projection even when
    /// activate_cell_input is on (mLSTM without use_axon_qkv, as the reference does).
    var takesRawPreUpInput = false

    public static var supportedTypes: [String] { CoreKinds.tags }

    static func parse(_ json: JSON, hiddenSize: Int) throws -> CoreConfig {
        guard json.objectPairs != nil else { throw CortexError.parse("cell is not a JSON object") }
        guard let tag = (json["cell_type"] ?? json["core_type"])?.string else {
            throw CortexError.parse("cell has no cell_type (or core_type)")
        }
        guard let kind = CoreKinds.named(tag) else {
            throw CortexError.unsupported("unknown cell type '\(tag)' (supported: \(supportedTypes.joined(separator: ", ")))")
        }
        return try kind.parseCore(json, hiddenSize: hiddenSize)
    }
}
