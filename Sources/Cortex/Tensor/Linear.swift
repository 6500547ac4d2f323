/// An `nn.Linear` from a state dict: `y = x·Wᵀ + b`, on rows of contiguous floats.
public struct Linear: Sendable {
    public let weight: Tensor  // [out, in]
    public let bias: Tensor?   // [out]
    /// Routed adapters (`adapter_A`, `adapter_B`) when the stack has them.
    let adapter: LowRankAdapter?

    public var inFeatures: Int { weight.shape[1] }
    public var outFeatures: Int { weight.shape[0] }

    /// `<name>.weight` and, when `bias`, `<name>.bias`.
    public init(_ weights: WeightSource, _ name: String, in i: Int, out o: Int, bias: Bool = true) throws {
        weight = try weights.tensor(name + ".weight", shape: [o, i])
        self.bias = bias ? try weights.tensor(name + ".bias", shape: [o]) : nil
        adapter = try weights.adapter(name, in: i, out: o)
    }

    /// `y[r] (+)= x[r]·Wᵀ + b` for `rows` rows; `ldx`/`ldy` are row strides (default:
    /// the feature counts), `accumulate` adds to what `y` holds.
    public func apply(
        _ x: UnsafePointer<Float>, rows: Int, into y: UnsafeMutablePointer<Float>,
        ldx: Int? = nil, ldy: Int? = nil, accumulate: Bool = false, routing: Routing? = nil
    ) {
        let o = outFeatures, ldc = ldy ?? o
        BLAS.linear(m: rows, n: o, k: inFeatures, a: x, lda: ldx ?? inFeatures, weight: weight.data,
                    c: y, ldc: ldc, beta: accumulate ? 1 : 0)
        if let bias { for r in 0..<rows { Vec.add(y + r * ldc, bias.data, o) } }
        if let adapter, let routing {
            adapter.add(x, rows: rows, ldx: ldx ?? inFeatures, into: y, ldy: ldc, routing: routing)
        }
    }

    public var parameterCount: Int { weight.count + (bias?.count ?? 0) + (adapter.map { $0.a.count + $0.b.count } ?? 0) }
}

/// A LayerNorm (eps 1e-5) or RMSNorm from a state dict, applied in place.
public struct Norm: Sendable {
    public enum Kind: Sendable { case layer, rms }
    let kind: Kind
    let weight: Tensor
    let bias: Tensor?
    let eps: Float

    /// `<name>.weight` (and `<name>.bias` when `bias`). nn.RMSNorm without eps uses
    /// float32's machine epsilon.
    public init(_ weights: WeightSource, _ name: String, features n: Int, kind: Kind = .layer, bias: Bool = false) throws {
        self.kind = kind
        weight = try weights.tensor(name + ".weight", shape: [n])
        self.bias = bias ? try weights.tensor(name + ".bias", shape: [n]) : nil
        eps = kind == .layer ? 1e-5 : Float.ulpOfOne
    }

    public func apply(_ p: UnsafeMutablePointer<Float>, rows: Int) {
        let n = weight.count
        switch kind {
        case .layer: Kernels.layerNorm(p, rows: rows, n: n, weight: weight.data, bias: bias?.data, eps: eps)
        case .rms: Kernels.rmsNorm(p, rows: rows, n: n, weight: weight.data, eps: eps)
        }
    }

    public var parameterCount: Int { weight.count + (bias?.count ?? 0) }
}
