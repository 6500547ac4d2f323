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
    let kqvbg: Linear    // hidden → heads·5·headDim, no bias
    let p123: Linear     // hidden → heads·3·eta, no bias
    let outProj: Linear  // heads·headDim → hidden
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
        kqvbg = try Linear(weights, prefix + "kqvbg_proj", in: hidden, out: heads * 5 * headDim, bias: false)
        p123 = try Linear(weights, prefix + "p123_proj", in: hidden, out: heads * 3 * eta, bias: false)
        outProj = try Linear(weights, prefix + "out_proj", in: heads * headDim, out: hidden)
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
    public var parameterCount: Int { kqvbg.parameterCount + p123.parameterCount + outProj.parameterCount }

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
        let routing = arena.routing(rowsPerStream: T)
        kqvbg.apply(x, rows: B * T, into: proj, routing: routing)
        p123.apply(x, rows: B * T, into: aux, routing: routing)
        let attn = try arena.take(B * T * A)
        // (row, head) pairs are independent: split them over the threads, each part with
        // its own scratch: qf, gk, dg [F]; kdq, cos [R]; σ(gamma), σ(beta) per d and
        // relu(p1), relu(p2), σ(p3) per e.
        let perPart = 3 * F + 2 * R + 2 * D + 3 * E
        let parts = Parallel.parts(work: B * T * Hh * F, grain: 16_384, items: B * Hh)
        let scratch = try arena.take(parts * perPart)
        let twoR = Float(2 * R)
        typealias V = Vec.V

        let omega = omegas.data  // hoisted out of the loops
        Parallel.run(parts: parts) { part, parts in
            let qf = scratch + part * perPart, gk = qf + F, dg = gk + F, kdq = dg + F, cosr = kdq + R, gates = cosr + R
            for pair in Parallel.slice(B * Hh, part: part, parts: parts, align: 1) {
                let b = pair / Hh, h = pair % Hh
                let tk = tildeK + b * R * Hh * F, tv = tildeV + b * R * Hh * D, s = sState + b * Hh * F
                let tick0 = tick[b]
                for t in 0..<T {
                    let keep: Float = (resets.map { $0[b * T + t] != 0 } ?? false) ? 0 : 1
                    for k in 0..<R { cosr[k] = Float(cos(Double((tick0 + Float(t + 1)) * omega[k]))) }
                    let row = b * T + t
                    let base = proj + row * P1 + h * 5 * D
                    let kk = base, q = base + D, v = base + 2 * D, be = base + 3 * D, ga = base + 4 * D
                    let pa = aux + row * P2 + h * 3 * E
                    // Gate activations, vectorised: σ(gamma), σ(beta), relu(p1), relu(p2), σ(p3).
                    let sg = gates, sb = gates + D, r1 = gates + 2 * D, r2 = r1 + E, s3 = r2 + E
                    sg.update(from: ga, count: D); sb.update(from: be, count: D)
                    Kernels.sigmoid(gates, 2 * D)
                    for e in 0..<E { r1[e] = max(pa[e], 0); r2[e] = max(pa[E + e], 0) }
                    s3.update(from: pa + 2 * E, count: E)
                    Kernels.sigmoid(s3, E)
                    // Outer products over (d, e): query features, gated key features, decay.
                    for d in 0..<D {
                        let kd = max(kk[d], 0), qd = max(q[d], 0), gd = sg[d]
                        for e in 0..<E {
                            let idx = d * E + e
                            let g = gd * s3[e]
                            qf[idx] = qd * r2[e]
                            gk[idx] = kd * r1[e] * g
                            dg[idx] = (1 - g) * keep
                        }
                    }
                    // Discounted sums s and tilde_k (SIMD over features), with the query
                    // products they feed (norm, kdq) in the same pass.
                    let sh = s + h * F
                    var normV = V()
                    for k in 0..<R { kdq[k] = 0 }
                    var idx = 0
                    while idx < F {
                        let n = min(8, F - idx)
                        let dgv = Vec.load(dg + idx, count: n), gkv = Vec.load(gk + idx, count: n), qv = Vec.load(qf + idx, count: n)
                        let sv = dgv * Vec.load(sh + idx, count: n) + gkv
                        Vec.store(sv, sh + idx, count: n)
                        normV += sv * qv
                        for k in 0..<R {
                            let p = tk + (k * Hh + h) * F + idx
                            let tkv = dgv * Vec.load(p, count: n) + gkv * V(repeating: cosr[k])
                            Vec.store(tkv, p, count: n)
                            kdq[k] += (tkv * qv).sum()
                        }
                        idx += n
                    }
                    // tilde_v over d, then the output.
                    let denom = twoR * normV.sum() + eps
                    let out = attn + row * A + h * D
                    var d = 0
                    while d < D {
                        let n = min(8, D - d)
                        let bt = Vec.load(sb + d, count: n)
                        let gv = Vec.load(v + d, count: n) * bt, db = (1 - bt) * V(repeating: keep)
                        var kv = V()
                        for k in 0..<R {
                            let p = tv + (k * Hh + h) * D + d
                            let tvv = db * Vec.load(p, count: n) + gv * V(repeating: cosr[k])
                            Vec.store(tvv, p, count: n)
                            kv += tvv * V(repeating: kdq[k])
                        }
                        Vec.store(kv / V(repeating: denom), out + d, count: n)
                        d += n
                    }
                }
            }
        }
        for b in 0..<B { tick[b] += Float(T) }
        outProj.apply(attn, rows: B * T, into: y, routing: routing)
    }
}

/// The stack config's "agalite" cell (see `CoreKind`).
extension AGaLiTeCore: CoreKind {
    static let tag = "agalite"
    static let classNames = (blocks: "AGaLiTeCell", scaffolds: "AGaLiTeCore")
    static let schema: StackSchema.Fields = ["n_heads": .init(type: .int(min: 1)), "head_dim": .init(type: .int(min: 1), nullable: true),
                                           "eta": .init(type: .int(min: 1)), "r": .init(type: .int(min: 1)), "eps": .init(type: .number(min: 0)),
                                           "dropout": StackSchema.probability]

    static func parseCore(_ json: JSON, hiddenSize: Int) throws -> CoreConfig {
        var c = Config(hiddenSize: hiddenSize)
        c.heads = try json.intField("n_heads", default: 8, in: 1...4096, core: tag)
        if let hd = json["head_dim"], !hd.isNull { c.headDim = try json.intField("head_dim", default: 0, in: 1...65536, core: tag) }
        c.eta = try json.intField("eta", default: 6, in: 1...4096, core: tag)
        c.r = try json.intField("r", default: 2, in: 1...4096, core: tag)
        if let e = json["eps"], !e.isNull {
            guard let v = e.double, v >= 0 else { throw CortexError.parse("agalite cell: eps must be a number >= 0") }
            c.eps = Float(v)
        }
        let config = c
        return CoreConfig(kind: Self.self) { w, p in try AGaLiTeCore(config: config, weights: w, prefix: p) }
    }
}
