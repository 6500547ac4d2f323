/// Mirrors cortexcore 0.1.6 `cortex.cells.conv.CausalConv1d` (seed: `CausalConv1dCore`)
/// and its kernel `kernels/pytorch/conv1d.py::causal_conv1d_pytorch`.
///
/// A causal convolution over time, depthwise (`channel_mixing = false`, weight
/// `[F, 1, KS]`) or full (`true`, weight `[F, F, KS]`), with optional bias. State:
/// `conv [B, KS, F]`, the last KS inputs, oldest first — each step shifts it by one and
/// appends the new input, then the output is the kernel applied to that window
/// (`kernel_size = 0`: the identity, no state).
///
/// Unlike the reference's fast sequence path, the carried window is always honoured,
/// so a sequence split over several calls equals one call.
public struct CausalConv1dCore: RecurrentModule {
    public struct Config: Sendable, Equatable {
        public var hiddenSize: Int
        public var kernelSize: Int = 4
        public var bias: Bool = true
        public var channelMixing: Bool = false
    }

    let features: Int
    let kernelSize: Int
    /// Depthwise taps, tap-major `[KS, F]`, so each tap is one contiguous SIMD row.
    let taps: Tensor?
    /// Channel mixing as one matrix `[F_out, KS·F_in]` over the flattened window.
    let mixing: PackedMatrix?
    let bias: Tensor?

    public init(config: Config, weights: WeightSource, prefix: String) throws {
        let F = config.hiddenSize, K = config.kernelSize
        features = F
        kernelSize = K
        guard K > 0 else { taps = nil; mixing = nil; bias = nil; return }
        if config.channelMixing {
            let w = try weights.tensor(prefix + "conv.weight", shape: [F, F, K])
            let m = try Tensor(zeros: [F, K * F])
            for o in 0..<F { for i in 0..<F { for k in 0..<K { m.data[o * K * F + k * F + i] = w.data[(o * F + i) * K + k] } } }
            mixing = try PackedMatrix(m)
            taps = nil
        } else {
            let w = try weights.tensor(prefix + "conv.weight", shape: [F, 1, K])
            let t = try Tensor(zeros: [K, F])
            for f in 0..<F { for k in 0..<K { t.data[k * F + f] = w.data[f * K + k] } }
            taps = t
            mixing = nil
        }
        bias = config.bias ? try weights.tensor(prefix + "conv.bias", shape: [F]) : nil
    }

    public var inputSize: Int { features }
    public var outputSize: Int { features }
    public var stateSpecs: [StateSpec] { kernelSize == 0 ? [] : [StateSpec(name: "conv", perRow: [kernelSize, features])] }
    public var parameterCount: Int { (taps?.count ?? 0) + (mixing?.count ?? 0) + (bias?.count ?? 0) }

    public func run(
        x: UnsafePointer<Float>, y: UnsafeMutablePointer<Float>,
        batch: Int, time: Int,
        state: StateSlots, resets: UnsafePointer<UInt8>?, arena: Arena
    ) throws {
        let F = features, K = kernelSize, W = K * F
        guard K > 0 else { y.update(from: x, count: batch * time * F); return }
        let conv = state[state.startIndex]
        // Mixing: gather every step's window, then one matrix product for all of them.
        let windows = mixing != nil ? try arena.take(batch * time * W) : nil
        for b in 0..<batch {
            let window = conv + b * W
            for t in 0..<time {
                if let resets, resets[b * time + t] != 0 { window.update(repeating: 0, count: W) }
                // Shift by one step and append x[b, t] (the reference's roll + write).
                if K > 1 { window.update(from: window + F, count: (K - 1) * F) }
                (window + (K - 1) * F).update(from: x + (b * time + t) * F, count: F)
                let out = y + (b * time + t) * F
                if let windows {
                    (windows + (b * time + t) * W).update(from: window, count: W)
                } else if let taps {
                    if let bias { out.update(from: bias.data, count: F) } else { out.update(repeating: 0, count: F) }
                    for k in 0..<K { Vec.multiplyAdd(out, taps.data + k * F, window + k * F, F) }
                }
            }
        }
        if let windows, let mixing {
            mixing.apply(m: batch * time, windows, ldx: W, into: y, ldy: F)
            if let bias { Vec.addRows(y, rows: batch * time, bias.data, F) }
        }
    }
}

/// The stack config's "cconv" cell (see `CoreKind`).
extension CausalConv1dCore: CoreKind {
    static let tag = "cconv"
    static let classNames = (blocks: "CausalConv1d", scaffolds: "CausalConv1dCore")
    static let schema: StackSchema.Fields = ["kernel_size": .init(type: .int(min: 0)), "causal_conv_bias": .init(type: .bool),
                                           "channel_mixing": .init(type: .bool)]

    static func parseCore(_ json: JSON, hiddenSize: Int) throws -> CoreConfig {
        let c = Config(hiddenSize: hiddenSize, kernelSize: try json.intField("kernel_size", default: 4, in: 0...1024, core: tag),
                       bias: try json.boolField("causal_conv_bias", default: true, core: tag),
                       channelMixing: try json.boolField("channel_mixing", default: false, core: tag))
        return CoreConfig(kind: Self.self) { w, p in try CausalConv1dCore(config: c, weights: w, prefix: p) }
    }
}
