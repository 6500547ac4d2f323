#if canImport(Glibc)
import Glibc
#endif

/// Mirrors cortexcore 0.1.6 `cortex.cells.agalite.AGaLiTeCell` (seed: `AGaLiTeCore`) with
/// its discounted sum `kernels/pytorch/agalite.py`: feature-mapped linear attention whose
/// keys and values are kept as oscillating, discounted sums.
///
/// Per head: `k, q, v, β, γ` (`kqvbg_proj`) and `p1, p2, p3` (`p123_proj`) give features
/// `relu(k)⊗relu(p1)`, `relu(q)⊗relu(p2)`, `σ(γ)⊗σ(p3)` of size `eta·d_head`. With
/// `c_r = cos((tick + t)·ω_r)`, `ω = linspace(−π, π, r)`:
///
///     tilde_k_r ← (1 − g)·tilde_k_r + (k_f·g)·c_r     s ← (1 − g)·s + k_f·g
///     tilde_v_r ← (1 − β)·tilde_v_r + (v·β)·c_r
///     y = out_proj( Σ_r tilde_v_r (tilde_k_r·q_f) / (2r·(s·q_f) + eps) )
///
/// A reset at step t zeroes the discounts of that step (the state before it is dropped).
/// State: `tilde_k [B, r, H, F]`, `tilde_v [B, r, H, d_head]`, `s [B, H, F]`, `tick [B]`
/// (starts at 1, advances by T per call; resets do not move it, reset_state zeroes it).
public struct AGaLiTeCore: RecurrentModule {
    public struct Config: Sendable, Equatable {
        public var hiddenSize: Int
        public var heads: Int = 8
        public var headDim: Int? = nil
        public var eta: Int = 6
        public var r: Int = 2
        public var eps: Float = 1e-5
    }

    let hidden: Int, heads: Int, headDim: Int, eta: Int, r: Int, eps: Float
    let kqvbg: Tensor    // [heads·5·headDim, hidden]
    let p123: Tensor     // [heads·3·eta, hidden]
    let outWeight: Tensor // [hidden, heads·headDim]
    let outBias: Tensor   // [hidden]
    let omegas: Tensor    // [r]

    public init(config: Config, weights: WeightSource, prefix: String) throws {
        hidden = config.hiddenSize
        heads = config.heads
        headDim = config.headDim ?? hidden / heads
        guard headDim * heads == hidden else {
            throw CortexError.unsupported("agalite cell: hidden_size \(hidden) is not n_heads \(heads) × head_dim \(headDim) (n_heads must divide hidden_size, or set head_dim)")
        }
        eta = config.eta
        r = config.r
        eps = config.eps
        kqvbg = try weights.tensor(prefix + "kqvbg_proj.weight", shape: [heads * 5 * headDim, hidden])
        p123 = try weights.tensor(prefix + "p123_proj.weight", shape: [heads * 3 * eta, hidden])
        outWeight = try weights.tensor(prefix + "out_proj.weight", shape: [hidden, heads * headDim])
        outBias = try weights.tensor(prefix + "out_proj.bias", shape: [hidden])
        omegas = try weights.tensor(prefix + "omegas", shape: [r])
    }

    var features: Int { eta * headDim }
    public var inputSize: Int { hidden }
    public var outputSize: Int { hidden }
    public var stateSpecs: [StateSpec] {
        [StateSpec(name: "tilde_k", perRow: [r, heads, features]),
         StateSpec(name: "tilde_v", perRow: [r, heads, headDim]),
         StateSpec(name: "s", perRow: [heads, features]),
         StateSpec(name: "tick", perRow: [], initial: 1)]
    }
    public var parameterCount: Int { kqvbg.count + p123.count + outWeight.count + outBias.count }

    @inline(__always) static func sigmoid(_ x: Float) -> Float { 1 / (1 + expf(-x)) }

    public func run(
        x: UnsafePointer<Float>, y: UnsafeMutablePointer<Float>,
        batch: Int, time: Int,
        state: StateSlots, resets: UnsafePointer<UInt8>?, arena: Arena
    ) throws {
        let B = batch, T = time, Hh = heads, D = headDim, E = eta, F = features, R = r
        guard B > 0, T > 0 else { return }
        let i0 = state.startIndex
        let tildeK = state[i0], tildeV = state[i0 + 1], sState = state[i0 + 2], tick = state[i0 + 3]
        let P1 = Hh * 5 * D, P2 = Hh * 3 * E, A = Hh * D
        // Projections of every step at once.
        let proj = try arena.take(B * T * P1), aux = try arena.take(B * T * P2)
        BLAS.linear(m: B * T, n: P1, k: hidden, a: x, lda: hidden, weight: kqvbg.data, c: proj, ldc: P1)
        BLAS.linear(m: B * T, n: P2, k: hidden, a: x, lda: hidden, weight: p123.data, c: aux, ldc: P2)
        let attn = try arena.take(B * T * A)
        let qf = try arena.take(F), kdq = try arena.take(R), cosr = try arena.take(R)
        let twoR = Float(2 * R)

        for b in 0..<B {
            let tk = tildeK + b * R * Hh * F, tv = tildeV + b * R * Hh * D, s = sState + b * Hh * F
            let tick0 = tick[b]
            for t in 0..<T {
                let keep: Float = (resets.map { $0[b * T + t] != 0 } ?? false) ? 0 : 1
                for k in 0..<R { cosr[k] = Float(cos(Double((tick0 + Float(t + 1)) * omegas.data[k]))) }
                let row = b * T + t
                for h in 0..<Hh {
                    let base = proj + row * P1 + h * 5 * D
                    let kk = base, q = base + D, v = base + 2 * D, be = base + 3 * D, ga = base + 4 * D
                    let pa = aux + row * P2 + h * 3 * E
                    let p1 = pa, p2 = pa + E, p3 = pa + 2 * E
                    let sh = s + h * F
                    for d in 0..<D {
                        let kd = max(kk[d], 0), qd = max(q[d], 0), gd = AGaLiTeCore.sigmoid(ga[d])
                        for e in 0..<E {
                            let idx = d * E + e
                            qf[idx] = qd * max(p2[e], 0)
                            let g = gd * AGaLiTeCore.sigmoid(p3[e])
                            let gk = kd * max(p1[e], 0) * g
                            let dg = (1 - g) * keep
                            sh[idx] = dg * sh[idx] + gk
                            for k in 0..<R {
                                let p = tk + (k * Hh + h) * F + idx
                                p.pointee = dg * p.pointee + gk * cosr[k]
                            }
                        }
                    }
                    for d in 0..<D {
                        let bt = AGaLiTeCore.sigmoid(be[d])
                        let gv = v[d] * bt, db = (1 - bt) * keep
                        for k in 0..<R {
                            let p = tv + (k * Hh + h) * D + d
                            p.pointee = db * p.pointee + gv * cosr[k]
                        }
                    }
                    var norm: Float = 0
                    for idx in 0..<F { norm += sh[idx] * qf[idx] }
                    for k in 0..<R {
                        var acc: Float = 0
                        let tkr = tk + (k * Hh + h) * F
                        for idx in 0..<F { acc += tkr[idx] * qf[idx] }
                        kdq[k] = acc
                    }
                    let denom = twoR * norm + eps
                    let out = attn + row * A + h * D
                    for d in 0..<D {
                        var kv: Float = 0
                        for k in 0..<R { kv += tv[(k * Hh + h) * D + d] * kdq[k] }
                        out[d] = kv / denom
                    }
                }
            }
            tick[b] = tick0 + Float(T)
        }
        BLAS.linear(m: B * T, n: hidden, k: A, a: attn, lda: A, weight: outWeight.data, c: y, ldc: hidden)
        Vec.addRows(y, rows: B * T, outBias.data, hidden)
    }
}
