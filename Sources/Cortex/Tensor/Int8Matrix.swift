import CKernels

/// An nn.Linear weight `[out, in]` quantised to INT8 per output channel (symmetric):
/// `scale_o = max(max_i |W_oi| / 127, 1e-8)`, `Q_oi = clamp(round(W_oi / scale_o), ±127)`,
/// rounding half to even in float32, as torch does (so a PyTorch-side quantisation of the
/// same weight gives the same bytes). Products read Q directly (`cxk_int8_linear`); the
/// fp32 weight is never rebuilt.
public struct Int8Matrix: @unchecked Sendable {
    public let rows: Int, cols: Int
    public let values: [Int8]
    public let scales: [Float]

    public init(quantizing w: Tensor) throws {
        guard w.rank == 2 else { throw CortexError.shapeMismatch("INT8 quantisation needs a 2-D weight, got \(w.shape)") }
        let rows = w.shape[0], cols = w.shape[1]
        let src = try w.contiguous()
        var q = [Int8](repeating: 0, count: rows * cols)
        var s = [Float](repeating: 0, count: rows)
        withExtendedLifetime(src) {
            let p = src.data
            for o in 0..<rows {
                let row = p + o * cols
                var amax: Float = 0
                for i in 0..<cols { amax = max(amax, abs(row[i])) }
                let scale = max(amax / 127, 1e-8)
                s[o] = scale
                for i in 0..<cols {
                    let v = (row[i] / scale).rounded(.toNearestOrEven)
                    q[o * cols + i] = Int8(v.isNaN ? 0 : min(127, max(-127, v)))
                }
            }
        }
        self.init(rows: rows, cols: cols, values: q, scales: s)
    }

    public init(rows: Int, cols: Int, values: [Int8], scales: [Float]) {
        self.rows = rows
        self.cols = cols
        self.values = values
        self.scales = scales
    }

    /// Bytes the weight takes (values + scales).
    public var byteCount: Int { values.count + 4 * scales.count }

    /// `C[m, rows] = A[m, cols] · (diag(scales) Q)ᵀ + beta·C`.
    @inline(__always)
    public func apply(m: Int, a: UnsafePointer<Float>, lda: Int, c: UnsafeMutablePointer<Float>, ldc: Int, beta: Float) {
        values.withUnsafeBufferPointer { q in
            scales.withUnsafeBufferPointer { s in
                cxk_int8_linear(Int32(m), Int32(rows), Int32(cols), a, Int32(lda), q.baseAddress, s.baseAddress, c,
                               Int32(ldc), beta)
            }
        }
    }

    /// The dequantised weight (tests and error reports only).
    public func dequantized() throws -> Tensor {
        var v = [Float](repeating: 0, count: rows * cols)
        for o in 0..<rows { for i in 0..<cols { v[o * cols + i] = Float(values[o * cols + i]) * scales[o] } }
        return try Tensor(shape: [rows, cols], values: v)
    }
}
