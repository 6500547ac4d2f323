/// The `config` object of a sidecar model directory (`"architecture": "cortex_sidecar"`):
///
///     {"kind": "gdn" | "fast_weight", "d_model": D, "layers": [host layer indices],
///      "n_heads": H, "head_dim": K,
///      gdn:          "window" (128), "conv" (4), "chunk" (64)
///      fast_weight:  "rank", "gamma" (0.95), "beta" (0.01), "alpha_max" (0.05),
///                    "two_way" (false), "uncertainty_guard" (2.0), "controller_hidden" (8),
///                    "signal_period" (1024), "signal_decay" (0.99),
///                    "segment_open" (1.2), "segment_close" (1.05)}
///
/// Weights: the PyTorch module's `state_dict()`, one `layers.<host layer>.` prefix per
/// hooked layer (`cortex_swift.torch_sidecars.SidecarModel`, an `nn.ModuleDict` keyed by layer).
public struct SidecarConfig: Sendable, Equatable {
    public enum Kind: String, Sendable { case gdn, fastWeight = "fast_weight" }

    public var kind: Kind
    public var dModel: Int
    public var layers: [Int]
    public var gdn: GDNSidecarLayer.Config?
    public var fastWeight: FastWeightSidecarLayer.Config?
    public var signalPeriod = 1024.0, signalDecay = 0.99
    public var segmentOpen = 1.2, segmentClose = 1.05

    static let limit = 1 << 16

    public static func parse(_ json: JSON) throws -> SidecarConfig {
        guard let pairs = json.objectPairs else { throw CortexError.parse("sidecar config: not a JSON object") }
        func fail(_ m: String) -> CortexError { .parse("sidecar config: " + m) }
        func int(_ name: String, default d: Int? = nil, min lo: Int = 1) throws -> Int {
            guard let v = json[name], !v.isNull else {
                if let d { return d }
                throw fail("\(name) is required")
            }
            guard let i = v.int else { throw fail("\(name) must be an integer") }
            guard i >= lo, i <= limit else { throw CortexError.unsupported("sidecar config: \(name) \(i) is outside [\(lo), \(limit)]") }
            return i
        }
        func number(_ name: String, default d: Double, range: ClosedRange<Double>) throws -> Double {
            guard let v = json[name], !v.isNull else { return d }
            guard let x = v.double, x.isFinite else { throw fail("\(name) must be a number") }
            guard range.contains(x) else { throw CortexError.unsupported("sidecar config: \(name) \(x) is outside \(range)") }
            return x
        }
        guard let k = json["kind"]?.string, let kind = Kind(rawValue: k) else {
            throw fail("kind must be \"gdn\" or \"fast_weight\"")
        }
        let common = ["kind", "d_model", "layers", "n_heads", "head_dim"]
        let specific = kind == .gdn ? ["window", "conv", "chunk"]
            : ["rank", "gamma", "beta", "alpha_max", "two_way", "uncertainty_guard", "controller_hidden",
               "signal_period", "signal_decay", "segment_open", "segment_close"]
        if let extra = pairs.first(where: { !(common + specific).contains($0.0) }) {
            throw fail("unknown field '\(extra.0)' for kind \(kind.rawValue)")
        }
        let d = try int("d_model"), heads = try int("n_heads"), headDim = try int("head_dim")
        guard let list = json["layers"]?.array, !list.isEmpty else { throw fail("layers must be a non-empty array of layer indices") }
        var layers: [Int] = []
        for v in list {
            guard let i = v.int, i >= 0, i < limit else { throw fail("layers: every entry must be an integer in [0, \(limit))") }
            guard !layers.contains(i) else { throw fail("layers: \(i) is listed twice") }
            layers.append(i)
        }
        guard heads * headDim <= limit else { throw CortexError.unsupported("sidecar config: n_heads × head_dim is larger than \(limit)") }
        var c = SidecarConfig(kind: kind, dModel: d, layers: layers)
        switch kind {
        case .gdn:
            var g = GDNSidecarLayer.Config(dModel: d, heads: heads, headDim: headDim, window: try int("window", default: 128))
            g.conv = try int("conv", default: 4)
            g.chunk = try int("chunk", default: 64)
            guard g.window <= 1 << 14 else { throw CortexError.unsupported("sidecar config: window \(g.window) is larger than 16384") }
            c.gdn = g
        case .fastWeight:
            var f = FastWeightSidecarLayer.Config(dModel: d, heads: heads, headDim: headDim, rank: try int("rank"))
            f.gamma = Float(try number("gamma", default: 0.95, range: 0...1))
            f.beta = Float(try number("beta", default: 0.01, range: 0...1))
            f.alphaMax = Float(try number("alpha_max", default: 0.05, range: 0...1e3))
            f.uncertaintyGuard = Float(try number("uncertainty_guard", default: 2, range: -1e9...1e9))
            f.controllerHidden = try int("controller_hidden", default: 8)
            if let v = json["two_way"], !v.isNull {
                guard let b = v.bool else { throw fail("two_way must be true or false") }
                f.twoWay = b
            }
            guard f.rank <= headDim else { throw CortexError.unsupported("sidecar config: rank \(f.rank) is larger than head_dim \(headDim)") }
            c.fastWeight = f
            c.signalPeriod = try number("signal_period", default: 1024, range: 1e-6...1e12)
            c.signalDecay = try number("signal_decay", default: 0.99, range: 0...1)
            c.segmentOpen = try number("segment_open", default: 1.2, range: -1e9...1e9)
            c.segmentClose = try number("segment_close", default: 1.05, range: -1e9...1e9)
        }
        return c
    }

    init(kind: Kind, dModel: Int, layers: [Int]) {
        self.kind = kind; self.dModel = dModel; self.layers = layers
    }
}
