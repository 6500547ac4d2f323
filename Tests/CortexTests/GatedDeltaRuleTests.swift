import Cortex
import XCTest

/// The gated delta rule kernel (the GDN sidecar's core) against
/// flash-linear-attention's naive reference (Tests/goldens/sidecars/gdn_kernel): the
/// recurrent and the chunkwise (chunk 64, UT transform) forms, from a non-zero state, over
/// a length that is not a multiple of the chunk, one step at a time, and across two calls.
/// Tolerance 1e-5 · max(1, max |reference|).
final class GatedDeltaRuleTests: XCTestCase {
    /// Per-head contiguous copies of `[B, T, H, F]` tensors.
    func head(_ t: Tensor, b: Int, h: Int) -> [Float] {
        let a = t.toArray(), T = t.shape[1], H = t.shape[2], F = t.shape.count == 4 ? t.shape[3] : 1
        var out = [Float](repeating: 0, count: T * F)
        for i in 0..<T { for f in 0..<F { out[i * F + f] = a[((b * T + i) * H + h) * F + f] } }
        return out
    }

    enum Form { case recurrent, chunkwise, steps }

    /// Run one form over every (b, h) of a case; returns outputs [B, T, H, V] and states.
    func run(_ g: SafetensorsFile, _ prefix: String, form: Form, states: [[Float]]) throws -> (out: [Float], states: [[Float]]) {
        let q = try g.tensor(prefix + "/q"), k = try g.tensor(prefix + "/k"), v = try g.tensor(prefix + "/v")
        let beta = try g.tensor(prefix + "/beta"), gate = try g.tensor(prefix + "/g")
        let B = q.shape[0], T = q.shape[1], H = q.shape[2], K = q.shape[3], V = v.shape[3]
        let scale = 1 / Float(K).squareRoot()
        var out = [Float](repeating: 0, count: B * T * H * V)
        var finals: [[Float]] = []
        for b in 0..<B {
            for h in 0..<H {
                let qh = head(q, b: b, h: h), kh = head(k, b: b, h: h), vh = head(v, b: b, h: h)
                let bh = head(beta, b: b, h: h), gh = head(gate, b: b, h: h)
                var s = states[b * H + h]
                var o = [Float](repeating: 0, count: T * V)
                var scratch = [Float](repeating: 0, count: GatedDeltaRule.chunkScratch(C: 64, K: K, V: V))
                try BLAS.ensureLoaded()
                switch form {
                case .recurrent:
                    GatedDeltaRule.recurrent(T: T, K: K, V: V, q: qh, k: kh, v: vh, beta: bh, g: gh, scale: scale,
                                             state: &s, out: &o, scratch: &scratch)
                case .chunkwise:
                    GatedDeltaRule.chunkwise(T: T, K: K, V: V, q: qh, k: kh, v: vh, beta: bh, g: gh, scale: scale,
                                             chunk: 64, state: &s, out: &o, scratch: &scratch)
                case .steps:  // T one-token chunkwise calls: the chunk form at c = 1
                    for t in 0..<T {
                        var ot = [Float](repeating: 0, count: V)
                        GatedDeltaRule.chunkwise(T: 1, K: K, V: V, q: Array(qh[(t * K)..<((t + 1) * K)]),
                                                 k: Array(kh[(t * K)..<((t + 1) * K)]), v: Array(vh[(t * V)..<((t + 1) * V)]),
                                                 beta: [bh[t]], g: [gh[t]], scale: scale, chunk: 64, state: &s, out: &ot,
                                                 scratch: &scratch)
                        for c in 0..<V { o[t * V + c] = ot[c] }
                    }
                }
                for t in 0..<T { for c in 0..<V { out[((b * T + t) * H + h) * V + c] = o[t * V + c] } }
                finals.append(s)
            }
        }
        return (out, finals)
    }

    func close(_ got: [Float], _ want: Tensor, _ what: String) {
        let w = want.toArray()
        var err: Float = got.count == w.count ? 0 : .infinity, scale: Float = 1
        for (a, b) in zip(got, w) { err = max(err, abs(a - b)); scale = max(scale, abs(b)) }
        goldenRecord("gated delta rule: \(what)", err: err, tol: 1e-5 * scale)
        XCTAssertLessThanOrEqual(err, 1e-5 * scale, what)
    }

    func testAgainstFlaNaive() throws {
        let g = try SafetensorsFile(path: repoRoot + "/Tests/goldens/sidecars/gdn_kernel/cases.safetensors")
        let s0 = try g.tensor("gdn/s0")
        let B = s0.shape[0], H = s0.shape[1], KV = s0.shape[2] * s0.shape[3]
        let initial = (0..<(B * H)).map { Array(s0.toArray()[($0 * KV)..<(($0 + 1) * KV)]) }
        let flat = { (s: [[Float]]) in s.flatMap { $0 } }
        let rec = try run(g, "gdn", form: .recurrent, states: initial)
        close(rec.out, try g.tensor("gdn/o_recurrent"), "recurrent vs fla recurrent")
        close(flat(rec.states), try g.tensor("gdn/s_recurrent"), "recurrent final state")
        let chk = try run(g, "gdn", form: .chunkwise, states: initial)
        close(chk.out, try g.tensor("gdn/o_recurrent"), "chunkwise (64) vs fla recurrent")
        close(chk.out, try g.tensor("gdn/o_chunk"), "chunkwise (64) vs fla chunk")
        close(flat(chk.states), try g.tensor("gdn/s_chunk"), "chunkwise final state")
        let steps = try run(g, "gdn", form: .steps, states: initial)
        close(steps.out, try g.tensor("gdn/o_recurrent"), "one token per call vs fla recurrent")
        // State carried: a second call continues from the first one's final state.
        let second = try run(g, "gdn2", form: .chunkwise, states: chk.states)
        close(second.out, try g.tensor("gdn2/o"), "second call (chunkwise) from the carried state")
        close(flat(second.states), try g.tensor("gdn2/s"), "second call final state")
    }

    /// Long sequences: chunkwise equals recurrent at T = 1024 within 1e-4 (the bound).
    func testChunkwiseMatchesRecurrentOnLongSequences() throws {
        try BLAS.ensureLoaded()
        let T = 1024, K = 64, V = 64
        var rng = SplitMix64(seed: 9)
        func normal() -> Float { Float((rng.uniform() + rng.uniform() + rng.uniform() - 1.5) * 2) }
        var q = (0..<(T * K)).map { _ in normal() }, k = (0..<(T * K)).map { _ in normal() }
        for t in 0..<T {  // L2-normalise q and k per token
            for arr in [0, 1] {
                var n: Float = 0
                for a in 0..<K { let x = arr == 0 ? q[t * K + a] : k[t * K + a]; n += x * x }
                n = n.squareRoot()
                for a in 0..<K { if arr == 0 { q[t * K + a] /= n } else { k[t * K + a] /= n } }
            }
        }
        let v = (0..<(T * V)).map { _ in normal() }
        let beta = (0..<T).map { _ in Float(1 / (1 + exp(-Double(normal())))) }
        let g = (0..<T).map { _ in -Float(log1p(exp(-Double(normal() + 2)))) }
        var s1 = [Float](repeating: 0, count: K * V), s2 = s1
        var o1 = [Float](repeating: 0, count: T * V), o2 = o1
        var scratch = [Float](repeating: 0, count: GatedDeltaRule.chunkScratch(C: 64, K: K, V: V))
        GatedDeltaRule.recurrent(T: T, K: K, V: V, q: q, k: k, v: v, beta: beta, g: g, scale: 0.125, state: &s1, out: &o1,
                                 scratch: &scratch)
        GatedDeltaRule.chunkwise(T: T, K: K, V: V, q: q, k: k, v: v, beta: beta, g: g, scale: 0.125, chunk: 64, state: &s2,
                                 out: &o2, scratch: &scratch)
        var err: Float = 0, scale: Float = 1
        for (a, b) in zip(o2, o1) { err = max(err, abs(a - b)); scale = max(scale, abs(b)) }
        goldenRecord("gated delta rule: T=1024 chunkwise vs recurrent", err: err, tol: 1e-4 * scale)
        XCTAssertLessThanOrEqual(err, 1e-4 * scale)
    }
}
