/// One hooked layer's sidecar: per-stream state tensors and the forward over `[B, T, D]`.
public protocol SidecarLayer: Sendable {
    /// The state tensors of one stream, in order: name, float count, and the value a
    /// fresh stream starts from (nil: zeros).
    var stateTensors: [SidecarStateTensor] { get }
    /// `y [B, T, D]` for `h [B, T, D]`, advancing `state` (one pointer per state tensor,
    /// each `[B, count]`). `signals [B, T, 4]`: the plasticity controller's inputs
    /// (ignored by layers without one).
    func run(h: UnsafePointer<Float>, signals: UnsafePointer<Float>, y: UnsafeMutablePointer<Float>,
             batch: Int, time: Int, state: [UnsafeMutablePointer<Float>], arena: Arena) throws
    var parameterCount: Int { get }
}

public struct SidecarStateTensor: Sendable {
    public let name: String
    public let count: Int
    public let initial: Tensor?
}

/// The sidecars of every hooked layer of one host model, loaded from
/// a model directory with `"architecture": "cortex_sidecar"`. Immutable and shareable;
/// all memory lives in `SidecarSession`s.
public final class SidecarModel: Sendable {
    public let config: SidecarConfig
    /// Layers in config order; `slot(ofLayer:)` maps a host layer index to its position.
    public let layers: [any SidecarLayer]

    public init(config: SidecarConfig, weights: WeightSource) throws {
        self.config = config
        layers = try config.layers.map { index -> any SidecarLayer in
            let prefix = "layers.\(index)."
            if let g = config.gdn { return try GDNSidecarLayer(config: g, weights: weights, prefix: prefix) }
            if let f = config.fastWeight { return try FastWeightSidecarLayer(config: f, weights: weights, prefix: prefix) }
            throw CortexError.parse("sidecar config: no layer settings for kind \(config.kind.rawValue)")
        }
    }

    public var dModel: Int { config.dModel }
    public var parameterCount: Int { layers.reduce(0) { $0 + $1.parameterCount } }
    public var usesSignals: Bool { config.kind == .fastWeight }

    /// Position of host layer `layer` among the hooked layers.
    public func slot(ofLayer layer: Int) throws -> Int {
        guard let i = config.layers.firstIndex(of: layer) else {
            throw CortexError.invalidArgument("layer \(layer) has no sidecar (hooked layers: \(config.layers.map(String.init).joined(separator: ", ")))")
        }
        return i
    }

    /// Floats one stream's state takes across all layers (constant in the tokens seen).
    public var floatsPerStream: Int { layers.reduce(0) { $0 + $1.stateTensors.reduce(0) { $0 + $1.count } } }
}
