#if canImport(Glibc)
import Glibc
#endif

/// The gated delta rule of one head (Yang, Kautz & Hatamizadeh 2024), exactly
/// as flash-linear-attention's reference `fla/ops/gated_delta_rule/naive.py` computes it.
/// With the state `S [K, V]`, per step t (g ≤ 0 the log decay, β ∈ (0, 1)):
///
///     S ← e^{g_t} S;   v'_t = β_t (v_t − Sᵀk_t);   S ← S + k_t v'_tᵀ;   o_t = Sᵀ (scale·q_t)
///
/// Two forms: `recurrent` (one step at a time; step mode) and `chunkwise`, fla's chunk
/// algorithm (intra-chunk parallel through the UT transform `T = (I + A)⁻¹` of the
/// strictly lower `A = tril(β k kᵀ ∘ Γ)`, inter-chunk recurrent), which agree to
/// rounding. Inputs per head are row-major and contiguous: q, k `[T, K]`, v `[T, V]`,
/// β, g `[T]`; `state` is updated in place; `out [T, V]`.
public enum GatedDeltaRule {
    /// Scratch floats `recurrent` needs.
    public static func recurrentScratch(V: Int) -> Int { 2 * V }

    public static func recurrent(
        T: Int, K: Int, V: Int, q: UnsafePointer<Float>, k: UnsafePointer<Float>, v: UnsafePointer<Float>,
        beta: UnsafePointer<Float>, g: UnsafePointer<Float>, scale: Float,
        state S: UnsafeMutablePointer<Float>, out: UnsafeMutablePointer<Float>, scratch: UnsafeMutablePointer<Float>
    ) {
        let u = scratch, vn = scratch + V
        for t in 0..<T {
            let kt = k + t * K, qt = q + t * K, vt = v + t * V, ot = out + t * V
            let decay = expf(g[t])
            for i in 0..<(K * V) { S[i] *= decay }
            u.update(repeating: 0, count: V)
            for a in 0..<K {
                let ka = kt[a], row = S + a * V
                for c in 0..<V { u[c] += row[c] * ka }
            }
            let b = beta[t]
            for c in 0..<V { vn[c] = (vt[c] - u[c]) * b }
            ot.update(repeating: 0, count: V)
            for a in 0..<K {
                let ka = kt[a], qa = qt[a] * scale, row = S + a * V
                for c in 0..<V {
                    row[c] += ka * vn[c]
                    ot[c] += qa * row[c]
                }
            }
        }
    }

    /// Scratch floats `chunkwise` needs for chunk size C.
    public static func chunkScratch(C: Int, K: Int, V: Int) -> Int { 4 * C * C + C + 3 * C * K + 3 * C * V }

    public static func chunkwise(
        T: Int, K: Int, V: Int, q: UnsafePointer<Float>, k: UnsafePointer<Float>, v: UnsafePointer<Float>,
        beta: UnsafePointer<Float>, g: UnsafePointer<Float>, scale: Float, chunk C: Int,
        state S: UnsafeMutablePointer<Float>, out: UnsafeMutablePointer<Float>, scratch: UnsafeMutablePointer<Float>
    ) {
        // Scratch layout.
        let A = scratch, L = A + C * C, Aq = L + C * C, tmpRow = Aq + C * C, gamma = tmpRow + C * C
        let kb = gamma + C, W = kb + C * K, qd = W + C * K
        let vb = qd + C * K, U = vb + C * V, vnew = U + C * V
        var t0 = 0
        while t0 < T {
            let c = min(C, T - t0)
            let qc = q + t0 * K, kc = k + t0 * K, vc = v + t0 * V, oc = out + t0 * V
            // γ: cumulative log decay; Γ[i, j] = e^{γ_i − γ_j} (i ≥ j).
            var acc: Float = 0
            for i in 0..<c { acc += g[t0 + i]; gamma[i] = acc }
            for i in 0..<c { for j in 0..<c { L[i * c + j] = j <= i ? expf(gamma[i] - gamma[j]) : 0 } }
            for i in 0..<c {
                let b = beta[t0 + i]
                for a in 0..<K { kb[i * K + a] = kc[i * K + a] * b }
                for d in 0..<V { vb[i * V + d] = vc[i * V + d] * b }
            }
            // A = −(β k kᵀ ∘ Γ), strictly lower; then the forward substitution of
            // fla's naive chunk (row i updated from the already-final rows above it).
            BLAS.gemm(transB: true, m: c, n: c, k: K, a: kb, lda: K, b: kc, ldb: K, c: A, ldc: c)
            for i in 0..<c { for j in 0..<c { A[i * c + j] = j < i ? -(A[i * c + j] * L[i * c + j]) : 0 } }
            for i in 1..<max(c, 1) {
                let row = A + i * c
                for j in 0..<i {
                    var s: Float = 0
                    for m in 0..<i { s += row[m] * A[m * c + j] }
                    tmpRow[j] = row[j] + s
                }
                for j in 0..<i { row[j] = tmpRow[j] }
            }
            for i in 0..<c { A[i * c + i] += 1 }
            // U = T·(β v), W = T·(β k ∘ e^γ).
            for i in 0..<c { let e = expf(gamma[i]); for a in 0..<K { qd[i * K + a] = kb[i * K + a] * e } }
            BLAS.gemm(m: c, n: V, k: c, a: A, lda: c, b: vb, ldb: V, c: U, ldc: V)
            BLAS.gemm(m: c, n: K, k: c, a: A, lda: c, b: qd, ldb: K, c: W, ldc: K)
            // Intra-chunk scores (q kᵀ ∘ Γ, diagonal kept), scale folded into q.
            BLAS.gemm(transB: true, m: c, n: c, k: K, a: qc, lda: K, b: kc, ldb: K, c: Aq, ldc: c)
            for i in 0..<c { for j in 0..<c { Aq[i * c + j] = j <= i ? Aq[i * c + j] * scale * L[i * c + j] : 0 } }
            // v_new = U − W·S;  o = (scale·q ∘ e^γ)·S + Aq·v_new.
            vnew.update(from: U, count: c * V)
            BLAS.gemm(m: c, n: V, k: K, a: W, lda: K, b: S, ldb: V, c: vnew, ldc: V, beta: 1, alpha: -1)
            for i in 0..<c { let e = expf(gamma[i]) * scale; for a in 0..<K { qd[i * K + a] = qc[i * K + a] * e } }
            BLAS.gemm(m: c, n: V, k: K, a: qd, lda: K, b: S, ldb: V, c: oc, ldc: V)
            BLAS.gemm(m: c, n: V, k: c, a: Aq, lda: c, b: vnew, ldb: V, c: oc, ldc: V, beta: 1)
            // S = e^{γ_last} S + (k ∘ e^{γ_last − γ})ᵀ · v_new.
            let last = gamma[c - 1], el = expf(last)
            for i in 0..<(K * V) { S[i] *= el }
            for i in 0..<c { let e = expf(last - gamma[i]); for a in 0..<K { qd[i * K + a] = kc[i * K + a] * e } }
            BLAS.gemm(transA: true, m: K, n: V, k: c, a: qd, lda: K, b: vnew, ldb: V, c: S, ldc: V, beta: 1)
            t0 += c
        }
    }
}
