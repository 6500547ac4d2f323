import CKernels

/// The matrix products Cortex needs, in PyTorch's layout: weights are stored
/// `[out, in]` (nn.Linear, nn.LSTM), activations row-major `[rows, features]`.
/// OpenBLAS is loaded on first use (`ensureLoaded`, called when a model loads).
public enum BLAS {
    /// Load OpenBLAS if needed; throws when it is not installed.
    public static func ensureLoaded() throws {
        if let message = cxk_blas_load() { throw CortexError.unsupported(String(cString: message)) }
    }

    /// Row-major `C[m, n] = alpha·op(A)·op(B) + beta·C` on the calling thread (small products
    /// inside a model's own loops). `op` transposes when `transA`/`transB`.
    @inline(__always)
    public static func gemm(
        transA: Bool = false, transB: Bool = false, m: Int, n: Int, k: Int,
        a: UnsafePointer<Float>, lda: Int, b: UnsafePointer<Float>, ldb: Int,
        c: UnsafeMutablePointer<Float>, ldc: Int, beta: Float = 0, alpha: Float = 1
    ) {
        if m == 0 || n == 0 { return }
        cxk_blas_sgemm(transA ? 1 : 0, transB ? 1 : 0, Int32(m), Int32(n), Int32(k), alpha, a, Int32(lda), b, Int32(ldb),
                      beta, c, Int32(ldc))
    }

    /// Threads Cortex splits work over (any n >= 1, at most 512); n <= 0 restores the
    /// default: CORTEX_NUM_THREADS, else the CPUs this process may use (affinity mask and
    /// cgroup quota). Safe at any time; calls already running keep their split.
    public static func setThreads(_ n: Int) {
        cxk_blas_set_threads(n <= 0 ? Int32(0) : Int32(clamping: n))
    }

    public static var threads: Int { Int(cxk_blas_get_threads()) }

    /// The ISA Cortex's own kernels run (packed products, row-wise kernels): "AVX-512",
    /// "AVX2+FMA" or "portable C".
    public static var kernelISA: String {
        switch cxk_packed_level() {
        case 2: return "AVX-512"
        case 1: return "AVX2+FMA"
        default: return "portable C"
        }
    }

    /// The kernel family OpenBLAS runs ("SkylakeX", "Haswell", ...).
    public static var coreName: String { String(cString: cxk_blas_corename()) }

    /// A small matrix product: SGEMM for sequences; for one query row (step mode) SGEMV,
    /// because OpenBLAS allocates inside single-row SGEMMs and a step must not allocate.
    public static func product(
        transB: Bool = false, m: Int, n: Int, k: Int, a: UnsafePointer<Float>, lda: Int,
        b: UnsafePointer<Float>, ldb: Int, c: UnsafeMutablePointer<Float>, ldc: Int, beta: Float = 0
    ) {
        guard m == 1 else {
            gemm(transB: transB, m: m, n: n, k: k, a: a, lda: lda, b: b, ldb: ldb, c: c, ldc: ldc, beta: beta)
            return
        }
        if n == 0 { return }
        if k == 0 { if beta == 0 { c.update(repeating: 0, count: n) } else { for j in 0..<n { c[j] *= beta } }; return }
        if transB {  // c = B[n, k]·a
            cxk_blas_sgemv_n(Int32(n), Int32(k), 1, b, Int32(ldb), a, beta, c)
        } else {     // c = B[k, n]ᵀ·a
            cxk_blas_sgemv_t(Int32(k), Int32(n), 1, b, Int32(ldb), a, beta, c)
        }
    }
}
