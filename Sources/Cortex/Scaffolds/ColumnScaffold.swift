import CKernels


/// Router settings of a Column (cortexcore's `RouterConfig`). Only what inference needs;
/// the init scales only matter for training.
public struct RouterConfig: Sendable, Equatable {
    public var dKey: Int? = nil
    public var temperature: Double = 1.0
    public var topK: Int? = nil
    public var useSqrtScale = true
    public var dKeyLocal: Int? = nil
    public var localTemperature: Double = 1.0
    public var whisperLambda: Double = 0.1
    public var centerRefine = true
    public var restrictToTopK = true

    public init() {}
}

/// Mirrors cortexcore 0.1.6 `ColumnBlock` (seed: `ColumnScaffold`) with its
/// `GlobalContextRouter`, `TokenRefiner`, `_EAxisCrossAttention` and ReZero head.
///
/// With one expert it is that expert. With E > 1, per token:
///
///     u = RMSNorm(x);  Δ_i = expert_i(u) − u
///     Δ̃_i = Δ_i + out(Σ_j softmax_j((W_q u + q_i)·W_k Δ_j / √d_k) · W_v Δ_j)
///     a = softmax(g + λ·p̂(u))        g: global logits (top-k masked), p̂: centred token logits
///     r = Σ_i a_i Δ̃_i + (u − x);  out = x + α_main·r + α_col·fc2(GELU(fc1(r)))
///
/// The global logits depend on parameters only (and the adapter slot), so they are
/// computed once at load.
/// State: each expert's, under `expert_<ExpertClass>_<i>`.
public struct ColumnScaffold: RecurrentModule {
    let experts: [any RecurrentModule]
    let expertKeys: [String]
    let slotCounts: [Int]
    /// First state slot of each expert (relative to the Column's first).
    let slotStarts: [Int]
    /// `groups[p - 1]`: the experts split in p groups of similar size (parameters as the
    /// cost proxy), for p = 1 ... E. With p threads each runs one group (experts are
    /// independent until their deltas are mixed).
    let groups: [[[Int]]]
    let hidden: Int
    let mix: Mixing?

    /// Everything a Column with more than one expert needs (a class: `run` binds it per
    /// call, and a struct copy would retain every tensor).
    final class Mixing: Sendable {
        let boundary: Norm
        let globalLogits: [Float]                 // [slots or 1, E], −inf where top-k masked
        let refiner: (wq: Linear, keys: Tensor, scale: Float, center: Bool, lambda: Float)?
        let mixWq: Linear, mixWk: Linear, mixWv: Linear, mixOut: Linear
        let queryBias: Tensor                     // [E, d_k]
        let dKey: Int
        let fc1: Linear, fc2: Linear
        let alphaMain: Float, alphaCol: Float

        init(boundary: Norm, globalLogits: [Float], refiner: (wq: Linear, keys: Tensor, scale: Float, center: Bool, lambda: Float)?,
             mixWq: Linear, mixWk: Linear, mixWv: Linear, mixOut: Linear, queryBias: Tensor, dKey: Int,
             fc1: Linear, fc2: Linear, alphaMain: Float, alphaCol: Float) {
            self.boundary = boundary; self.globalLogits = globalLogits; self.refiner = refiner
            self.mixWq = mixWq; self.mixWk = mixWk; self.mixWv = mixWv; self.mixOut = mixOut
            self.queryBias = queryBias; self.dKey = dKey; self.fc1 = fc1; self.fc2 = fc2
            self.alphaMain = alphaMain; self.alphaCol = alphaCol
        }
    }

    init(experts: [any RecurrentModule], expertKeys: [String], hidden H: Int, router: RouterConfig,
         weights: WeightSource, prefix: String) throws {
        self.experts = experts
        self.expertKeys = expertKeys
        slotCounts = experts.map { $0.stateSpecs.count }
        var starts: [Int] = [], next = 0
        for n in slotCounts { starts.append(next); next += n }
        slotStarts = starts
        let costs = experts.map { $0.parameterCount }
        groups = (1...max(experts.count, 1)).map { Parallel.groups(costs: costs, parts: $0) }
        hidden = H
        let E = experts.count
        guard E > 1 else { mix = nil; return }
        let dk = router.dKey ?? H
        // Global prior: (W_k keys)·(W_q context) · scale, top-k masked, over temperature.
        let context = try weights.tensor(prefix + "router.context", shape: [H])
        let keys = try weights.tensor(prefix + "router.keys", shape: [E, dk])
        let rq = try Linear(weights, prefix + "router.Wq", in: H, out: dk, bias: false)
        let rk = try Linear(weights, prefix + "router.Wk", in: dk, out: dk, bias: false)
        let scale = router.useSqrtScale ? Float(1 / Double(dk).squareRoot()) : Float(1 / Double(dk))
        // With routed adapters the reference feeds the router one row per stream, so the
        // prior differs per slot: one row of logits per slot (else one row).
        let slotCount = weights.routing?.numSlots ?? 1
        var table: [Float] = []
        let q = try Tensor(zeros: [dk]), kp = try Tensor(zeros: [E, dk])
        for s in 0..<slotCount {
            var scores = [Float](repeating: 0, count: E)
            withExtendedLifetime((context, keys, q, kp)) {  // raw pointers must not outlive the buffers
                var slot = Int32(s)
                withUnsafePointer(to: &slot) { sp in
                    let routing = weights.routing == nil ? nil : Routing(slots: sp, rowsPerStream: E)
                    rq.apply(context.data, rows: 1, into: q.data, routing: routing)
                    rk.apply(keys.data, rows: E, into: kp.data, routing: routing)
                }
                for e in 0..<E {
                    var acc: Float = 0
                    for j in 0..<dk { acc += kp.data[e * dk + j] * q.data[j] }
                    scores[e] = acc * scale
                }
            }
            if router.restrictToTopK, let k = router.topK, k < E {
                // torch.topk: the k largest (ties: the lower index first).
                let keep = Set(scores.indices.sorted { scores[$0] > scores[$1] || (scores[$0] == scores[$1] && $0 < $1) }.prefix(k))
                for e in 0..<E where !keep.contains(e) { scores[e] = -.infinity }
            }
            table += scores
        }
        let temperature = Float(max(router.temperature, 1e-6))
        let lambda = Float(router.whisperLambda)
        var refiner: (wq: Linear, keys: Tensor, scale: Float, center: Bool, lambda: Float)? = nil
        if lambda > 0 {
            let dkl = router.dKeyLocal ?? router.dKey ?? H
            let tau = max(router.localTemperature, 1e-6)
            refiner = (try Linear(weights, prefix + "refiner.Wq_tok", in: H, out: dkl, bias: false),
                       try weights.tensor(prefix + "refiner.k_loc", shape: [E, dkl]),
                       Float(tau * Double(dkl).squareRoot()), router.centerRefine, lambda)
        }
        mix = Mixing(
            boundary: try Norm(weights, prefix + "boundary_norm", features: H, kind: .rms),
            globalLogits: table.map { $0 / temperature },
            refiner: refiner,
            mixWq: try Linear(weights, prefix + "e_mixer.Wq", in: H, out: dk, bias: false),
            mixWk: try Linear(weights, prefix + "e_mixer.Wk", in: H, out: dk, bias: false),
            mixWv: try Linear(weights, prefix + "e_mixer.Wv", in: H, out: H, bias: false),
            mixOut: try Linear(weights, prefix + "e_mixer.out", in: H, out: H, bias: false),
            queryBias: try weights.tensor(prefix + "e_mixer.q_bias", shape: [E, dk]),
            dKey: dk,
            fc1: try Linear(weights, prefix + "head.fc1", in: H, out: 2 * H),
            fc2: try Linear(weights, prefix + "head.fc2", in: 2 * H, out: H),
            alphaMain: try weights.scalar(prefix + "alpha_main"),
            alphaCol: try weights.scalar(prefix + "alpha_col"))
    }

    public var inputSize: Int { hidden }
    public var outputSize: Int { hidden }
    public var stateSpecs: [StateSpec] {
        zip(expertKeys, experts).flatMap { key, e in e.stateSpecs.map { $0.prefixed(key) } }
    }
    public var parameterCount: Int {
        var n = experts.reduce(0) { $0 + $1.parameterCount }
        if let m = mix {
            let E = experts.count
            n += m.boundary.parameterCount + m.mixWq.parameterCount + m.mixWk.parameterCount + m.mixWv.parameterCount
            n += m.mixOut.parameterCount + m.queryBias.count + m.fc1.parameterCount + m.fc2.parameterCount + 2
            n += hidden + E * m.dKey + m.dKey * hidden + m.dKey * m.dKey  // router
            if let r = m.refiner { n += r.wq.parameterCount + r.keys.count }
        }
        return n
    }

    /// One parallel part's experts: group `part` of `groups[parts - 1]`.
    struct ExpertJob {
        let column: ColumnScaffold
        let u: UnsafePointer<Float>, outs: UnsafeMutablePointer<Float>
        let batch: Int, time: Int
        let state: StateSlots, resets: UnsafePointer<UInt8>?
        let arena: Arena

        func run(part: Int, parts: Int) {
            let c = column, own = arena.part(part), rows = batch * time * c.hidden
            for e in c.groups[parts - 1][part] {
                let first = state.startIndex + c.slotStarts[e]
                do {
                    try c.experts[e].run(x: u, y: outs + e * rows, batch: batch, time: time,
                                         state: state[first..<(first + c.slotCounts[e])], resets: resets, arena: own)
                } catch {
                    own.failure = error
                    return
                }
            }
        }
    }

    public func run(
        x: UnsafePointer<Float>, y: UnsafeMutablePointer<Float>,
        batch: Int, time: Int,
        state: StateSlots, resets: UnsafePointer<UInt8>?, arena: Arena
    ) throws {
        guard let m = mix else {
            try experts[0].run(x: x, y: y, batch: batch, time: time, state: state, resets: resets, arena: arena)
            return
        }
        let N = batch * time, H = hidden, E = experts.count, dk = m.dKey
        let u = try arena.take(N * H)
        u.update(from: x, count: N * H)
        m.boundary.apply(u, rows: N)
        // Experts on u (in groups, one per thread), then their deltas Δ [N, E, H].
        let out = try arena.take(N * H), delta = try arena.take(N * E * H)
        let outs = try arena.take(E * N * H)
        let parts = min(E, BLAS.threads)
        arena.prepareParts(parts)
        // A plain C task over a job on the stack: a capturing closure here would be
        // boxed on the heap every call (Parallel.run's withoutActuallyEscaping).
        var job = ExpertJob(column: self, u: u, outs: outs, batch: batch, time: time, state: state,
                            resets: resets, arena: arena)
        withUnsafeMutablePointer(to: &job) { p in
            _ = cxk_parallel_run({ ctx, part, parts in
                ctx?.assumingMemoryBound(to: ExpertJob.self).pointee.run(part: Int(part), parts: Int(parts))
            }, p, Int32(parts))
        }
        if let e = arena.partFailure(parts) { throw e }
        for e in 0..<E {
            let o = outs + e * N * H
            for n in 0..<N {
                let d = delta + (n * E + e) * H, on = o + n * H, un = u + n * H
                for j in 0..<H { d[j] = on[j] - un[j] }
            }
        }
        // Expert-axis cross-attention: Δ̃ = Δ + out(attn · W_v Δ).
        let qt = try arena.take(N * dk), k = try arena.take(N * E * dk), v = try arena.take(N * E * H)
        let perToken = arena.routing(rowsPerStream: time), perDelta = arena.routing(rowsPerStream: time * E)
        m.mixWq.apply(u, rows: N, into: qt, routing: perToken)
        m.mixWk.apply(delta, rows: N * E, into: k, routing: perDelta)
        m.mixWv.apply(delta, rows: N * E, into: v, routing: perDelta)
        let o = try arena.take(N * E * H), scores = try arena.take(E * E), qe = try arena.take(dk)
        // Raw pointers hoisted out of the per-token loops (property accesses would retain).
        let qb = m.queryBias.data
        let sqrtK = Float(Double(dk).squareRoot())
        for n in 0..<N {
            for e in 0..<E {
                for j in 0..<dk { qe[j] = qt[n * dk + j] + qb[e * dk + j] }
                for f in 0..<E {
                    var s: Float = 0
                    for j in 0..<dk { s += qe[j] * k[(n * E + f) * dk + j] }
                    scores[e * E + f] = s / sqrtK
                }
            }
            Kernels.softmax(scores, rows: E, n: E)
            for e in 0..<E {
                let oe = o + (n * E + e) * H
                oe.update(repeating: 0, count: H)
                for f in 0..<E {
                    let w = scores[e * E + f], vf = v + (n * E + f) * H
                    for j in 0..<H { oe[j] += w * vf[j] }
                }
            }
        }
        m.mixOut.apply(o, rows: N * E, into: delta, accumulate: true, routing: perDelta)  // Δ̃ in place
        // Mixture weights per token, then r = Σ a_i Δ̃_i + (u − x) into `out`.
        let a = try arena.take(N * E)
        m.globalLogits.withUnsafeBufferPointer { g in
            for n in 0..<N {
                let row = g.count > E ? (arena.routeSlots.map { Int($0[n / time]) * E } ?? 0) : 0
                for e in 0..<E { a[n * E + e] = g[row + e] }
            }
        }
        if let r = m.refiner {
            let dkl = r.keys.shape[1], keys = r.keys.data, scale = r.scale, lambda = r.lambda, center = r.center
            let tq = try arena.take(N * dkl)
            r.wq.apply(u, rows: N, into: tq, routing: perToken)
            for n in 0..<N {
                var mean: Float = 0
                for e in 0..<E {
                    var s: Float = 0
                    for j in 0..<dkl { s += tq[n * dkl + j] * keys[e * dkl + j] }
                    scores[e] = s / scale
                    mean += scores[e]
                }
                mean /= Float(E)
                for e in 0..<E { a[n * E + e] += lambda * (center ? scores[e] - mean : scores[e]) }
            }
        }
        Kernels.softmax(a, rows: N, n: E)
        for n in 0..<N {
            let rn = out + n * H
            rn.update(repeating: 0, count: H)
            for e in 0..<E {
                let w = a[n * E + e]
                let d = delta + (n * E + e) * H
                for j in 0..<H { rn[j] += w * d[j] }
            }
            for j in 0..<H { rn[j] += u[n * H + j] - x[n * H + j] }
        }
        // out = x + α_main·r + α_col·head(r)
        let h1 = try arena.take(N * 2 * H)
        m.fc1.apply(out, rows: N, into: h1, routing: perToken)
        Kernels.gelu(h1, N * 2 * H)
        let h = try arena.take(N * H)
        m.fc2.apply(h1, rows: N, into: h, routing: perToken)
        let alphaMain = m.alphaMain, alphaCol = m.alphaCol
        for i in 0..<(N * H) { y[i] = (x[i] + alphaMain * out[i]) + alphaCol * h[i] }
    }
}
