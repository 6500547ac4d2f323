import CKernels

/// open-mythos `Expert`: the SwiGLU feed-forward `down(silu(gate(x)) ⊙ up(x))`, the dense
/// FFN of prelude and coda blocks and each expert of the MoE.
struct SwiGLU: Sendable {
    let gate: Linear, up: Linear, down: Linear
    var inner: Int { gate.outFeatures }

    init(_ w: WeightSource, _ p: String, dim: Int, inner: Int) throws {
        gate = try Linear(w, p + "gate", in: dim, out: inner, bias: false)
        up = try Linear(w, p + "up", in: dim, out: inner, bias: false)
        down = try Linear(w, p + "down", in: inner, out: dim, bias: false)
    }

    var parameterCount: Int { gate.parameterCount + up.parameterCount + down.parameterCount }

    /// `y = down(silu(gate x) ⊙ up x)` for `rows` rows.
    func apply(_ x: UnsafePointer<Float>, rows: Int, into y: UnsafeMutablePointer<Float>, arena: Arena) throws {
        let I = inner
        let g = try arena.take(rows * I), u = try arena.take(rows * I)
        gate.apply(x, rows: rows, into: g)
        up.apply(x, rows: rows, into: u)
        cxk_silu_mul(g, u, rows * I)
        down.apply(g, rows: rows, into: y)
    }
}

/// open-mythos `MoEFFN` (DeepSeekMoE): a softmax router over `n_experts` fine-grained
/// SwiGLU experts, top-k chosen on `logits + router_bias` (the load-balancing bias picks
/// experts but never weights them), the k softmax scores renormalised to sum to one, plus
/// `n_shared_experts` always-on experts of width `expert_dim · k`.
///
/// Dispatch is grouped: each expert runs once on all the rows routed to it (one GEMM per
/// active expert), and each row sums its k contributions in the reference's slot order.
struct MoEFFN: Sendable {
    let router: Linear
    let routerBias: Tensor
    let experts: [SwiGLU]
    let shared: [SwiGLU]
    let topK: Int
    let dim: Int

    init(_ w: WeightSource, _ p: String, _ c: MythosConfig) throws {
        dim = c.dim
        topK = c.nExpertsPerTok
        router = try Linear(w, p + "router", in: c.dim, out: c.nExperts, bias: false)
        routerBias = try w.tensor(p + "router_bias", shape: [c.nExperts])
        experts = try (0..<c.nExperts).map { try SwiGLU(w, p + "routed_experts.\($0).", dim: c.dim, inner: c.expertDim) }
        shared = try (0..<c.nSharedExperts).map {
            try SwiGLU(w, p + "shared_experts.\($0).", dim: c.dim, inner: c.expertDim * c.nExpertsPerTok)
        }
    }

    var parameterCount: Int {
        router.parameterCount + (experts + shared).reduce(0) { $0 + $1.parameterCount }
    }

    func apply(_ x: UnsafePointer<Float>, rows N: Int, into y: UnsafeMutablePointer<Float>, arena: Arena) throws {
        let E = experts.count, K = topK, D = dim
        let logits = try arena.take(N * E), scores = try arena.take(N * E)
        router.apply(x, rows: N, into: logits)
        scores.update(from: logits, count: N * E)
        Kernels.softmax(scores, rows: N, n: E)
        // Per row: the k experts (largest biased logit first; ties: lower index) and
        // their renormalised weights.
        let chosen = try arena.take(N * K), weight = try arena.take(N * K)  // expert ids stored as Float
        let counts = try arena.take(E)
        counts.update(repeating: 0, count: E)
        let bias = routerBias.data
        let picked = try arena.takeBytes(E)
        for n in 0..<N {
            let l = logits + n * E
            picked.update(repeating: 0, count: E)
            var total: Float = 0
            for i in 0..<K {
                var best = -1
                var bestValue = -Float.infinity
                for e in 0..<E where picked[e] == 0 {
                    let v = l[e] + bias[e]
                    if best < 0 || v > bestValue { best = e; bestValue = v }
                }
                picked[best] = 1
                chosen[n * K + i] = Float(best)
                weight[n * K + i] = scores[n * E + best]
                total += scores[n * E + best]
                counts[best] += 1
            }
            for i in 0..<K { weight[n * K + i] /= total }
        }
        // Group rows per expert, run each expert once, keep each (row, slot) result.
        // Experts run in groups of similar row counts, one per thread (each with its own
        // scratch; their results land in disjoint rows).
        let results = try arena.take(N * K * D)
        let work = N * K * D * (experts.first?.inner ?? 0)
        let used = (0..<E).filter { counts[$0] > 0 }.count
        let parts = Parallel.parts(work: work, grain: 1 << 17, items: used)
        let costs = (0..<E).map { Int(counts[$0]) }  // routed rows
        arena.prepareParts(parts)
        Parallel.run(parts: parts) { part, parts in
            let a = arena.part(part)
            do {
                for e in Parallel.groups(costs: costs, parts: parts)[part] where counts[e] > 0 {
                    let c = Int(counts[e])
                    let gathered = try a.take(c * D), outRows = try a.take(c * D)
                    let slots = try a.take(c)  // (row·K + slot) of each gathered row
                    var j = 0
                    for r in 0..<(N * K) where Int(chosen[r]) == e {
                        (gathered + j * D).update(from: x + (r / K) * D, count: D)
                        slots[j] = Float(r)
                        j += 1
                    }
                    try experts[e].apply(gathered, rows: c, into: outRows, arena: a)
                    for j in 0..<c { (results + Int(slots[j]) * D).update(from: outRows + j * D, count: D) }
                }
            } catch {
                a.failure = error
            }
        }
        if let e = arena.partFailure(parts) { throw e }
        // out = Σ_slot w·expert(x) in slot order, then + each shared expert.
        y.update(repeating: 0, count: N * D)
        for n in 0..<N {
            let yn = y + n * D
            for i in 0..<K {
                let w = weight[n * K + i], r = results + (n * K + i) * D
                for j in 0..<D { yn[j] += w * r[j] }
            }
        }
        if !shared.isEmpty {
            let s = try arena.take(N * D)
            for expert in shared {
                try expert.apply(x, rows: N, into: s, arena: arena)
                Vec.add(y, s, N * D)
            }
        }
    }
}
