#if canImport(Glibc)
import Glibc
#endif

/// The low-rank fast-weight sidecar for one host layer, the math of the
/// `FastWeightSidecarLayer` of cortex_swift.torch_sidecars (PyTorch reference written from the seed).
/// Per head, `U [d, r]` and `V [r, d]`; per token, `α = σ(W_α h)·m_gate·write_scale·α_max`:
///
///     U, V ← γU, γV;  k_u = Uᵀk;  U += α k k_uᵀ;  V += α k_u vᵀ;  U, V −= β·clamp(·, −1, 1)
///     y_fast = Vᵀ(Uᵀq)   (never forming UV)
///     gate mode:    y = σ(g)·y_fast + (1 − σ(g))·v,  g = w_g·[q; k; y_fast] + b_g
///     two-way mode: y = w₀v + w₁y_fast,  w = softmax(qᵀk/√d, qᵀy_fast/√d)
///     out = W_o [y_heads]   (W_o zero-initialised)
///
/// The plasticity controller maps per-token signals `[surprise, uncertainty, reward,
/// phase]` to `[m_gate, write_scale] = σ(W₂ tanh(W₁ s + b₁) + b₂)`, with write_scale
/// capped at 0.5 when uncertainty exceeds `uncertaintyGuard`. A fresh state starts U at the model's
/// `U0` (a seeded orthonormal basis / √r) and V at zero.
public struct FastWeightSidecarLayer: Sendable {
    public struct Config: Sendable, Equatable {
        public var dModel: Int, heads: Int, headDim: Int, rank: Int
        public var gamma: Float = 0.95, beta: Float = 0.01, alphaMax: Float = 0.05, uncertaintyGuard: Float = 2
        public var twoWay = false
        public var controllerHidden = 8
        public init(dModel: Int, heads: Int, headDim: Int, rank: Int) {
            self.dModel = dModel; self.heads = heads; self.headDim = headDim; self.rank = rank
        }
    }

    public let config: Config
    let qProj: Linear, kProj: Linear, vProj: Linear, alphaProj: Linear, gate: Linear?, ctrl1: Linear, ctrl2: Linear
    let oProj: Linear
    /// The initial U of every head, `[H, d, r]`.
    public let u0: Tensor

    public init(config c: Config, weights w: WeightSource, prefix p: String) throws {
        config = c
        let Hd = c.heads * c.headDim
        qProj = try Linear(w, p + "q_proj", in: c.dModel, out: Hd, bias: false)
        kProj = try Linear(w, p + "k_proj", in: c.dModel, out: Hd, bias: false)
        vProj = try Linear(w, p + "v_proj", in: c.dModel, out: Hd, bias: false)
        alphaProj = try Linear(w, p + "alpha_proj", in: c.dModel, out: c.heads)
        // The gate exists in both modes' state dicts; two-way mixing does not read it.
        let g = try Linear(w, p + "gate", in: 3 * c.headDim, out: 1)
        gate = c.twoWay ? nil : g
        ctrl1 = try Linear(w, p + "ctrl1", in: 4, out: c.controllerHidden)
        ctrl2 = try Linear(w, p + "ctrl2", in: c.controllerHidden, out: 2)
        oProj = try Linear(w, p + "o_proj", in: Hd, out: c.dModel, bias: false)
        u0 = try w.tensor(p + "U0", shape: [c.heads, c.headDim, c.rank])
    }

    /// Fill fresh per-sequence fast weights: U = U0, V = 0 (`u [B, H, d, r]`, `v [B, H, r, d]`).
    public func initState(batch B: Int, u: UnsafeMutablePointer<Float>, v: UnsafeMutablePointer<Float>) {
        let per = u0.count
        for b in 0..<B { (u + b * per).update(from: u0.data, count: per) }
        v.update(repeating: 0, count: B * per)
    }

    /// `y [B, T, D]` for `h [B, T, D]` and controller signals `[B, T, 4]`, advancing the
    /// fast weights `u [B, H, d, r]`, `v [B, H, r, d]`.
    public func run(h: UnsafePointer<Float>, signals: UnsafePointer<Float>, y: UnsafeMutablePointer<Float>,
                    batch B: Int, time T: Int, u U: UnsafeMutablePointer<Float>, v V: UnsafeMutablePointer<Float>,
                    arena: Arena) throws {
        let c = config, H = c.heads, d = c.headDim, r = c.rank, N = B * T, Hd = H * d
        let q = try arena.take(N * Hd), k = try arena.take(N * Hd), vv = try arena.take(N * Hd)
        qProj.apply(h, rows: N, into: q)
        kProj.apply(h, rows: N, into: k)
        vProj.apply(h, rows: N, into: vv)
        // α per (token, head): σ(W_α h) · m_gate · write_scale · α_max.
        let alpha = try arena.take(N * H), hidden = try arena.take(N * c.controllerHidden), gates = try arena.take(N * 2)
        alphaProj.apply(h, rows: N, into: alpha)
        Kernels.sigmoid(alpha, N * H)
        ctrl1.apply(signals, rows: N, into: hidden)
        Kernels.tanh(hidden, N * c.controllerHidden)
        ctrl2.apply(hidden, rows: N, into: gates)
        Kernels.sigmoid(gates, N * 2)
        for n in 0..<N {
            var ws = gates[n * 2 + 1]
            if signals[n * 4 + 1] > c.uncertaintyGuard { ws = min(ws, 0.5) }
            let s = gates[n * 2] * ws * c.alphaMax
            for i in 0..<H { alpha[n * H + i] *= s }
        }
        let out = try arena.take(N * Hd), ku = try arena.take(r), uq = try arena.take(r), yf = try arena.take(d)
        let gin = try arena.take(3 * d)
        let inv = 1 / Float(d).squareRoot(), gamma = c.gamma, beta = c.beta
        for b in 0..<B {
            for t in 0..<T {
                let n = b * T + t
                for i in 0..<H {
                    let Ui = U + (b * H + i) * d * r, Vi = V + (b * H + i) * r * d
                    let qn = q + n * Hd + i * d, kn = k + n * Hd + i * d, vn = vv + n * Hd + i * d
                    let a = alpha[n * H + i]
                    // U, V ← γU, γV;  k_u = Uᵀk;  U += α k k_uᵀ;  V += α k_u vᵀ  (rows of U are
                    // [r], rows of V are [d]: every loop is a contiguous SIMD axpy).
                    Vec.scale(Ui, gamma, d * r)
                    Vec.scale(Vi, gamma, d * r)
                    ku.update(repeating: 0, count: r)
                    for x in 0..<d { Vec.axpy(ku, kn[x], Ui + x * r, r) }
                    for x in 0..<d { Vec.axpy(Ui + x * r, a * kn[x], ku, r) }
                    for j in 0..<r { Vec.axpy(Vi + j * d, a * ku[j], vn, d) }
                    Vec.antiHebbian(Ui, beta, d * r)
                    Vec.antiHebbian(Vi, beta, d * r)
                    // y_fast = Vᵀ(Uᵀq)
                    uq.update(repeating: 0, count: r)
                    for x in 0..<d { Vec.axpy(uq, qn[x], Ui + x * r, r) }
                    yf.update(repeating: 0, count: d)
                    for j in 0..<r { Vec.axpy(yf, uq[j], Vi + j * d, d) }
                    let o = out + n * Hd + i * d
                    if let gate {
                        gin.update(from: qn, count: d)
                        (gin + d).update(from: kn, count: d)
                        (gin + 2 * d).update(from: yf, count: d)
                        var gl: Float = 0
                        gate.apply(gin, rows: 1, into: &gl)
                        let s = 1 / (1 + expf(-gl))
                        for x in 0..<d { o[x] = s * yf[x] + (1 - s) * vn[x] }
                    } else {
                        var slow: Float = 0, fast: Float = 0
                        for x in 0..<d { slow += qn[x] * kn[x]; fast += qn[x] * yf[x] }
                        slow *= inv; fast *= inv
                        let m = max(slow, fast), e0 = expf(slow - m), e1 = expf(fast - m), w0 = e0 / (e0 + e1), w1 = e1 / (e0 + e1)
                        for x in 0..<d { o[x] = w0 * vn[x] + w1 * yf[x] }
                    }
                }
            }
        }
        oProj.apply(out, rows: N, into: y)
    }
}

extension FastWeightSidecarLayer: SidecarLayer {
    public var stateTensors: [SidecarStateTensor] {
        [SidecarStateTensor(name: "U", count: u0.count, initial: u0),
         SidecarStateTensor(name: "V", count: u0.count, initial: nil)]
    }

    public func run(h: UnsafePointer<Float>, signals: UnsafePointer<Float>, y: UnsafeMutablePointer<Float>,
                    batch: Int, time: Int, state s: [UnsafeMutablePointer<Float>], arena: Arena) throws {
        guard s.count == 2 else { throw CortexError.invalidArgument("fast-weight sidecar: expected 2 state tensors, got \(s.count)") }
        try run(h: h, signals: signals, y: y, batch: batch, time: time, u: s[0], v: s[1], arena: arena)
    }

    public var parameterCount: Int {
        [qProj, kProj, vProj, alphaProj, ctrl1, ctrl2, oProj].reduce(0) { $0 + $1.parameterCount } + (gate?.parameterCount ?? 0)
    }
}
