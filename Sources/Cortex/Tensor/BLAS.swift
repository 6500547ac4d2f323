import COpenBLAS

/// The matrix products Cortex needs, in PyTorch's layout: weights are stored
/// `[out, in]` (nn.Linear, nn.LSTM), activations row-major `[rows, features]`.
public enum BLAS {
    /// `C[m, n] = A[m, k] · Wᵀ + beta · C`, with W stored `[n, k]` (an nn.Linear weight).
    /// `lda`, `ldc` are row strides in elements (for strided rows inside a sequence).
    @inline(__always)
    public static func linear(
        m: Int, n: Int, k: Int,
        a: UnsafePointer<Float>, lda: Int,
        weight: UnsafePointer<Float>,
        c: UnsafeMutablePointer<Float>, ldc: Int,
        beta: Float = 0
    ) {
        if m == 0 || n == 0 { return }
        if m == 1 {
            // One row: a matrix-vector product is what OpenBLAS does best here.
            cblas_sgemv(CblasRowMajor, CblasNoTrans, Int32(n), Int32(k), 1.0,
                        weight, Int32(k), a, 1, beta, c, 1)
        } else {
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, Int32(m), Int32(n), Int32(k), 1.0,
                        a, Int32(lda), weight, Int32(k), beta, c, Int32(ldc))
        }
    }

    /// Threads OpenBLAS may use; n <= 0 restores the default (all cores).
    public static func setThreads(_ n: Int) {
        openblas_set_num_threads(Int32(clamping: n))
    }

    public static var threads: Int { Int(openblas_get_num_threads()) }
}
