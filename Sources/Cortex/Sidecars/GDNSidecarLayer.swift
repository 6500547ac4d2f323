#if canImport(Glibc)
import Glibc
#endif

/// The hybrid Gated-DeltaNet sidecar for one host layer, the math of the
/// `GDNSidecarLayer` of cortex_swift.torch_sidecars (PyTorch reference written from the seed):
///
///     q, k, v = SiLU(ShortConv1d₄(W h)) each;  α = σ(W_α h + b_α),  β = σ(W_β h)
///     delta rule per head on L2-normalised q, k (scale K^-½), state S [H, K, K]
///     sliding-window attention per head over the last W tokens (itself included)
///     o = m·o_Δ + (1 − m)·o_W,  m = σ(W_m h + b_m);   y = W_o o   (W_o zero-initialised)
///
/// Sequence mode runs the delta rule chunkwise (chunk 64), step mode recurrently; both
/// equal the reference's token loop. State per sequence (`GDNSidecarLayer.State`): the
/// convs' last 3 raw inputs, S, and the keys/values of the last W − 1 tokens (oldest
/// first, right-aligned) with their count.
public struct GDNSidecarLayer: Sendable {
    public struct Config: Sendable, Equatable {
        public var dModel: Int, heads: Int, headDim: Int, window: Int = 128, conv: Int = 4, chunk: Int = 64
        public init(dModel: Int, heads: Int, headDim: Int, window: Int = 128) {
            self.dModel = dModel; self.heads = heads; self.headDim = headDim; self.window = window
        }
    }

    /// One batch's state tensors, each `[B, ...]` (the PyTorch reference's names).
    public struct State {
        public var convQ, convK, convV: UnsafeMutablePointer<Float>  // [B, conv−1, H·K]
        public var S: UnsafeMutablePointer<Float>                     // [B, H, K, K]
        public var winK, winV: UnsafeMutablePointer<Float>            // [B, W−1, H·K]
        public var winN: UnsafeMutablePointer<Float>                  // [B]
        public init(convQ: UnsafeMutablePointer<Float>, convK: UnsafeMutablePointer<Float>, convV: UnsafeMutablePointer<Float>,
                    S: UnsafeMutablePointer<Float>, winK: UnsafeMutablePointer<Float>, winV: UnsafeMutablePointer<Float>,
                    winN: UnsafeMutablePointer<Float>) {
            self.convQ = convQ; self.convK = convK; self.convV = convV; self.S = S
            self.winK = winK; self.winV = winV; self.winN = winN
        }
    }

    public let config: Config
    let qProj: Linear, kProj: Linear, vProj: Linear, aProj: Linear, bProj: Linear, mixProj: Linear, oProj: Linear
    let convs: [Tensor]  // q, k, v: [H·K, conv]

    public init(config c: Config, weights w: WeightSource, prefix p: String) throws {
        config = c
        let HK = c.heads * c.headDim
        qProj = try Linear(w, p + "q_proj", in: c.dModel, out: HK, bias: false)
        kProj = try Linear(w, p + "k_proj", in: c.dModel, out: HK, bias: false)
        vProj = try Linear(w, p + "v_proj", in: c.dModel, out: HK, bias: false)
        aProj = try Linear(w, p + "a_proj", in: c.dModel, out: c.heads)
        bProj = try Linear(w, p + "b_proj", in: c.dModel, out: c.heads, bias: false)
        mixProj = try Linear(w, p + "mix_proj", in: c.dModel, out: c.heads)
        oProj = try Linear(w, p + "o_proj", in: HK, out: c.dModel, bias: false)
        convs = try ["conv_q", "conv_k", "conv_v"].map { try w.tensor(p + $0 + ".weight", shape: [HK, 1, c.conv]) }
    }

    /// `y [B, T, D]` for `h [B, T, D]`, advancing `state`.
    public func run(h: UnsafePointer<Float>, y: UnsafeMutablePointer<Float>, batch B: Int, time T: Int,
                    state st: State, arena: Arena) throws {
        let c = config, H = c.heads, K = c.headDim, HK = H * K, N = B * T, W = c.window, C = c.conv
        // Projections of every token.
        let raw = try arena.take(3 * N * HK), act = try arena.take(3 * N * HK)
        qProj.apply(h, rows: N, into: raw)
        kProj.apply(h, rows: N, into: raw + N * HK)
        vProj.apply(h, rows: N, into: raw + 2 * N * HK)
        let a = try arena.take(N * H), bt = try arena.take(N * H), mix = try arena.take(N * H)
        aProj.apply(h, rows: N, into: a)
        bProj.apply(h, rows: N, into: bt)
        mixProj.apply(h, rows: N, into: mix)
        Kernels.sigmoid(bt, N * H)
        Kernels.sigmoid(mix, N * H)
        // Causal short convs over [window; tokens], SiLU; windows keep the last C−1 raw rows.
        for (i, window) in [st.convQ, st.convK, st.convV].enumerated() {
            let x = raw + i * N * HK, out = act + i * N * HK, wt = convs[i].data
            for b in 0..<B {
                let win = window + b * (C - 1) * HK
                for t in 0..<T {
                    let o = out + (b * T + t) * HK
                    for ch in 0..<HK {
                        var s: Float = 0
                        for j in 0..<C {
                            let src = t + j - (C - 1)  // position in this call (negative: the window)
                            let xv = src >= 0 ? x[(b * T + src) * HK + ch] : win[(C - 1 + src) * HK + ch]
                            s += wt[ch * C + j] * xv
                        }
                        o[ch] = s
                    }
                }
                // New window: the last C−1 raw rows of [window; x].
                let total = C - 1 + T
                let keep = try arena.take((C - 1) * HK)
                for r in 0..<(C - 1) {
                    let src = total - (C - 1) + r
                    let from = src < C - 1 ? win + src * HK : x + (b * T + src - (C - 1)) * HK
                    (keep + r * HK).update(from: from, count: HK)
                }
                win.update(from: keep, count: (C - 1) * HK)
            }
            Kernels.silu(out, N * HK)
        }
        let q = act, k = act + N * HK, v = act + 2 * N * HK
        // Per (sequence, head): delta rule on normalised q/k, window attention on raw q/k.
        let o = try arena.take(N * HK)
        let qh = try arena.take(T * K), kh = try arena.take(T * K), vh = try arena.take(T * K)
        let gh = try arena.take(T), betah = try arena.take(T), od = try arena.take(T * K)
        let scratch = try arena.take(GatedDeltaRule.chunkScratch(C: c.chunk, K: K, V: K))
        let block = 64
        let scores = try arena.take(block * (block + W)), ow = try arena.take(block * K)
        let keysH = try arena.take((W + T) * K), valsH = try arena.take((W + T) * K)
        let scale = 1 / Float(K).squareRoot()
        for b in 0..<B {
            let n = Int(st.winN[b])
            for hd in 0..<H {
                for t in 0..<T {
                    let row = (b * T + t) * HK + hd * K
                    func normalised(_ src: UnsafeMutablePointer<Float>, into dst: UnsafeMutablePointer<Float>) {
                        var s: Float = 0
                        for i in 0..<K { s += src[row + i] * src[row + i] }
                        let inv = 1 / max(s.squareRoot(), 1e-12)
                        for i in 0..<K { dst[t * K + i] = src[row + i] * inv }
                    }
                    normalised(q, into: qh)
                    normalised(k, into: kh)
                    (vh + t * K).update(from: v + row, count: K)
                    let av = a[(b * T + t) * H + hd]
                    gh[t] = Kernels.logSigmoid(av)
                    betah[t] = bt[(b * T + t) * H + hd]
                }
                let S = st.S + (b * H + hd) * K * K
                if T == 1 {
                    GatedDeltaRule.recurrent(T: T, K: K, V: K, q: qh, k: kh, v: vh, beta: betah, g: gh, scale: scale,
                                             state: S, out: od, scratch: scratch)
                } else {
                    GatedDeltaRule.chunkwise(T: T, K: K, V: K, q: qh, k: kh, v: vh, beta: betah, g: gh, scale: scale,
                                             chunk: c.chunk, state: S, out: od, scratch: scratch)
                }
                // Window attention: token t (global position g = n + t) sees keys g − W + 1 … g
                // of [cache's n valid rows; this call's rows], gathered per head into one
                // contiguous [n + T, K] matrix; queries in blocks of 64 against the keys
                // their block can see (two GEMMs per block).
                let cacheK = st.winK + b * (W - 1) * HK + hd * K, cacheV = st.winV + b * (W - 1) * HK + hd * K
                for j in 0..<n {
                    (keysH + j * K).update(from: cacheK + (W - 1 - n + j) * HK, count: K)
                    (valsH + j * K).update(from: cacheV + (W - 1 - n + j) * HK, count: K)
                }
                for t in 0..<T {
                    (keysH + (n + t) * K).update(from: k + (b * T + t) * HK + hd * K, count: K)
                    (valsH + (n + t) * K).update(from: v + (b * T + t) * HK + hd * K, count: K)
                }
                var t0 = 0
                while t0 < T {
                    let t1 = min(T, t0 + block), rows = t1 - t0
                    let lo = max(0, n + t0 - W + 1), hi = n + t1, width = hi - lo
                    BLAS.product(transB: true, m: rows, n: width, k: K, a: q + (b * T + t0) * HK + hd * K, lda: HK,
                                 b: keysH + lo * K, ldb: K, c: scores, ldc: width)
                    for r in 0..<rows {
                        let g = n + t0 + r, first = max(lo, g - W + 1) - lo, last = g - lo  // visible: first…last
                        let row = scores + r * width
                        row.update(repeating: 0, count: first)
                        Kernels.softmax(row + first, rows: 1, n: last - first + 1, scale: scale)
                        (row + last + 1).update(repeating: 0, count: width - last - 1)
                    }
                    BLAS.product(m: rows, n: K, k: width, a: scores, lda: width, b: valsH + lo * K, ldb: K,
                                 c: ow, ldc: K)
                    for r in 0..<rows {
                        let t = t0 + r, mt = mix[(b * T + t) * H + hd], ot = o + (b * T + t) * HK + hd * K
                        for i in 0..<K { ot[i] = mt * od[t * K + i] + (1 - mt) * ow[r * K + i] }
                    }
                    t0 = t1
                }
            }
            // Roll the window: the last W − 1 rows of [cache; this call], right-aligned.
            let keepFromCache = min(n, max(0, W - 1 - T)), fromCall = min(T, W - 1), total = keepFromCache + fromCall
            for (cache, src) in [(st.winK, k), (st.winV, v)] {
                let base = cache + b * (W - 1) * HK
                let tmp = try arena.take((W - 1) * HK)
                tmp.update(repeating: 0, count: (W - 1) * HK)
                let dst = tmp + (W - 1 - total) * HK
                dst.update(from: base + (W - 1 - keepFromCache) * HK, count: keepFromCache * HK)
                (dst + keepFromCache * HK).update(from: src + (b * T + T - fromCall) * HK, count: fromCall * HK)
                base.update(from: tmp, count: (W - 1) * HK)
            }
            st.winN[b] = Float(total)
        }
        oProj.apply(o, rows: N, into: y)
    }
}

extension GDNSidecarLayer: SidecarLayer {
    public var stateTensors: [SidecarStateTensor] {
        let c = config, HK = c.heads * c.headDim
        return [SidecarStateTensor(name: "conv_q", count: (c.conv - 1) * HK, initial: nil),
                SidecarStateTensor(name: "conv_k", count: (c.conv - 1) * HK, initial: nil),
                SidecarStateTensor(name: "conv_v", count: (c.conv - 1) * HK, initial: nil),
                SidecarStateTensor(name: "S", count: c.heads * c.headDim * c.headDim, initial: nil),
                SidecarStateTensor(name: "win_k", count: (c.window - 1) * HK, initial: nil),
                SidecarStateTensor(name: "win_v", count: (c.window - 1) * HK, initial: nil),
                SidecarStateTensor(name: "win_n", count: 1, initial: nil)]
    }

    public func run(h: UnsafePointer<Float>, signals: UnsafePointer<Float>, y: UnsafeMutablePointer<Float>,
                    batch: Int, time: Int, state s: [UnsafeMutablePointer<Float>], arena: Arena) throws {
        guard s.count == 7 else { throw CortexError.invalidArgument("GDN sidecar: expected 7 state tensors, got \(s.count)") }
        try run(h: h, y: y, batch: batch, time: time,
                state: State(convQ: s[0], convK: s[1], convV: s[2], S: s[3], winK: s[4], winV: s[5], winN: s[6]), arena: arena)
    }

    public var parameterCount: Int {
        [qProj, kProj, vProj, aProj, bProj, mixProj, oProj].reduce(0) { $0 + $1.parameterCount } + convs.reduce(0) { $0 + $1.count }
    }
}
