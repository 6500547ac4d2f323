/// Unmasked multi-head attention over row-major activations: for every head h,
/// `out_h = softmax(q_h k_hᵀ / √d) v_h`, with head h in columns `h·d ..< (h+1)·d` of q,
/// k, v and out (each with its own row stride). `scores` holds `rows·keys` floats.
/// A call with no keys writes zeros (nothing to attend to).
public enum Attention {
    public static func attend(
        q: UnsafePointer<Float>, ldq: Int, k: UnsafePointer<Float>, ldk: Int, v: UnsafePointer<Float>, ldv: Int,
        out: UnsafeMutablePointer<Float>, ldo: Int, rows: Int, keys: Int, heads: Int, dim d: Int,
        scores: UnsafeMutablePointer<Float>
    ) {
        guard keys > 0 else {
            for r in 0..<rows { (out + r * ldo).update(repeating: 0, count: heads * d) }
            return
        }
        let scale = 1 / Float(d).squareRoot()
        for h in 0..<heads {
            BLAS.gemm(transB: true, m: rows, n: keys, k: d, a: q + h * d, lda: ldq, b: k + h * d, ldb: ldk,
                      c: scores, ldc: keys)
            Kernels.softmax(scores, rows: rows, n: keys, scale: scale)
            BLAS.gemm(m: rows, n: d, k: keys, a: scores, lda: keys, b: v + h * d, ldb: ldv, c: out + h * d, ldc: ldo)
        }
    }
}
