import CKernels

/// A linear weight `W [n, k]` (nn.Linear / nn.LSTM layout) kept in two layouts: row-major
/// for OpenBLAS, and packed in 16-wide panels for the single-threaded `cx_packed_gemm`.
///
/// Measured on 2 cores (d=256 LSTM): the packed kernel wins for a few rows times a
/// weight that is hot in this core's cache — the per-step recurrence of sequence mode,
/// which reuses one weight T times (+20% tokens/s) — because it neither repacks the
/// weight nor wakes threads per call. A weight streamed once from L3 (step mode) is
/// bandwidth-bound, and OpenBLAS's two threads read it 2.5× faster; many rows
/// (whole-sequence input projections) are OpenBLAS's home ground. The packed copy
/// doubles the weight's memory.
public struct LinearWeight: @unchecked Sendable {
    public let weight: Tensor
    public let n: Int
    public let k: Int
    let packed: FloatBuffer

    /// Row counts up to this use the packed kernel.
    public static let packedMaxRows = 64

    public init(_ weight: Tensor) throws {
        guard weight.rank == 2 else { throw CortexError.shapeMismatch("linear weight must be 2-D, got \(weight.shape)") }
        let w = try weight.contiguous()
        self.weight = w
        n = w.shape[0]
        k = w.shape[1]
        guard n <= Int(Int32.max), k <= Int(Int32.max) else { throw CortexError.unsupported("linear weight \(w.shape) is too large") }
        packed = try FloatBuffer(count: cx_packed_size(Int32(n), Int32(k)))
        cx_pack_weights(w.data, Int32(n), Int32(k), packed.pointer)
    }

    /// `C[m, n] = A[m, k] · Wᵀ`, or `C += A · Wᵀ` when `accumulate`. `hot`: the caller
    /// applies this weight repeatedly in a loop (so it stays in cache).
    @inline(__always)
    public func apply(m: Int, a: UnsafePointer<Float>, lda: Int, c: UnsafeMutablePointer<Float>, ldc: Int,
                      accumulate: Bool = false, hot: Bool = false) {
        if hot && m <= LinearWeight.packedMaxRows {
            cx_packed_gemm(Int32(m), Int32(n), Int32(k), a, Int32(lda), packed.pointer, c, Int32(ldc), accumulate ? 1 : 0)
        } else {
            BLAS.linear(m: m, n: n, k: k, a: a, lda: lda, weight: weight.data, c: c, ldc: ldc, beta: accumulate ? 1 : 0)
        }
    }

    public var count: Int { n * k }
}
