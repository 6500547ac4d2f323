/// An `nn.Linear` from a state dict: `y = x·Wᵀ + b`, on rows of contiguous floats.
/// W is float32, packed once at load (`PackedMatrix`), or INT8 per output channel
/// (`Int8Matrix`) when the weights were loaded with `WeightSource.quantizeLinears` or
/// the file holds `<name>.weight_int8` and `<name>.weight_scale` (a saved INT8 model).
public struct Linear: Sendable {
    public enum Weight: Sendable {
        case f32(PackedMatrix)   // [out, in]
        case int8(Int8Matrix)
    }
    public let storage: Weight
    public let bias: Tensor?   // [out]
    /// Routed adapters (`adapter_A`, `adapter_B`) when the stack has them.
    let adapter: LowRankAdapter?
    public let inFeatures: Int, outFeatures: Int

    /// The float32 weight `[out, in]`, unpacked (nil when it is held as INT8).
    public var weight: Tensor? { if case .f32(let p) = storage { return try? p.unpacked() } else { return nil } }

    /// `<name>.weight` and, when `bias`, `<name>.bias`.
    public init(_ weights: WeightSource, _ name: String, in i: Int, out o: Int, bias: Bool = true) throws {
        if weights.has(name + ".weight_int8") {
            storage = .int8(try weights.int8Matrix(name, rows: o, cols: i))
        } else {
            let w = try weights.tensor(name + ".weight", shape: [o, i])
            storage = weights.quantizeLinears ? .int8(try Int8Matrix(quantizing: w)) : .f32(try PackedMatrix(w))
        }
        weights.linearNames.append(name)
        weights.linearWeightBytes += storage.byteCount
        inFeatures = i
        outFeatures = o
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
        switch storage {
        case .f32(let w):
            w.apply(m: rows, x, ldx: ldx ?? inFeatures, into: y, ldy: ldc, accumulate: accumulate)
        case .int8(let q):
            q.apply(m: rows, a: x, lda: ldx ?? inFeatures, c: y, ldc: ldc, beta: accumulate ? 1 : 0)
        }
        if let bias { for r in 0..<rows { Vec.add(y + r * ldc, bias.data, o) } }
        if let adapter, let routing {
            adapter.add(x, rows: rows, ldx: ldx ?? inFeatures, into: y, ldy: ldc, routing: routing)
        }
    }

    public var parameterCount: Int {
        inFeatures * outFeatures + (bias?.count ?? 0) + (adapter.map { $0.a.count + $0.b.count } ?? 0)
    }

}

extension Linear.Weight {
    /// Bytes the weight matrix takes (fp32: 4 per value; INT8: 1 per value + 4 per row).
    public var byteCount: Int {
        switch self {
        case .f32(let w): return 4 * w.rows * w.cols
        case .int8(let q): return q.byteCount
        }
    }
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
