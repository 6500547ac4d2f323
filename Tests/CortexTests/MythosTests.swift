import Cortex
import XCTest

/// OpenMythos parity with open-mythos 0.5.0 (Tests/goldens/mythos/<gqa|mla>, made by
/// scripts/make_goldens.py). Tolerance on logits: 1e-4 · max(1, max |reference|).
final class MythosTests: XCTestCase {
    struct MythosGolden {
        let model: Model
        let cases: SafetensorsFile
        let name: String

        init(_ name: String) throws {
            self.name = name
            let dir = repoRoot + "/Tests/goldens/mythos/" + name
            model = try Model.load(directory: dir + "/model")
            cases = try SafetensorsFile(path: dir + "/cases.safetensors")
        }

        func ids(_ key: String) throws -> (ids: [Int], batch: Int, time: Int) {
            let t = try cases.tensor(key)
            return (t.toArray().map { Int($0) }, t.shape[0], t.shape[1])
        }

        func close(_ got: Tensor, _ key: String, _ what: String, file: StaticString = #filePath, line: UInt = #line) throws {
            let want = try cases.tensor(key)
            XCTAssertEqual(got.shape, want.shape, "\(name) \(what): shape", file: file, line: line)
            let a = got.toArray(), b = want.toArray()
            var err: Float = a.count == b.count ? 0 : .infinity, scale: Float = 1
            for (x, y) in zip(a, b) { err = max(err, abs(x - y)); scale = max(scale, abs(y)) }
            goldenRecord("mythos \(name): \(what)", err: err, tol: 1e-4 * scale)
            XCTAssertLessThanOrEqual(err, 1e-4 * scale, "\(name) \(what)", file: file, line: line)
        }
    }

    /// Logits [B, T, V] of calls concatenated along time.
    func concatTime(_ parts: [Tensor]) throws -> Tensor {
        let B = parts[0].shape[0], V = parts[0].shape[2], T = parts.reduce(0) { $0 + $1.shape[1] }
        var out = [Float](repeating: 0, count: B * T * V)
        var t0 = 0
        for p in parts {
            let a = p.toArray(), tp = p.shape[1]
            for b in 0..<B { for t in 0..<tp { for v in 0..<V { out[(b * T + t0 + t) * V + v] = a[(b * tp + t) * V + v] } } }
            t0 += tp
        }
        return try Tensor(shape: [B, T, V], values: out)
    }

    func slice(_ x: (ids: [Int], batch: Int, time: Int), _ r: Range<Int>) -> [Int] {
        (0..<x.batch).flatMap { b in r.map { x.ids[b * x.time + $0] } }
    }

    func check(_ name: String) throws {
        let g = try MythosGolden(name)
        let c = g.model.mythos!.config
        let x = try g.ids("full/ids")
        try g.close(try g.model.logits(ids: x.ids, batch: x.batch), "full/logits", "full forward (ACT)")
        try g.close(try g.model.logits(ids: x.ids, batch: x.batch, loops: c.maxLoopIters + 2), "deep/logits",
                    "n_loops = max_loop_iters + 2")
        // Prefill 4 tokens, then one token per call through the cache.
        let cache = try g.model.makeCache(batch: x.batch)
        var parts = [try g.model.logits(ids: slice(x, 0..<4), batch: x.batch, cache: cache)]
        for t in 4..<x.time { parts.append(try g.model.logits(ids: slice(x, t..<(t + 1)), batch: x.batch, cache: cache)) }
        XCTAssertEqual(cache.position, x.time)
        try g.close(try concatTime(parts), "decode/logits", "prefill + token-by-token decode")
        // Deeper decode than prefill: loop 2's cache starts at the first decode step.
        let mixed = try g.model.makeCache(batch: x.batch)
        parts = [try g.model.logits(ids: slice(x, 0..<4), batch: x.batch, loops: 2, cache: mixed)]
        for t in 4..<7 { parts.append(try g.model.logits(ids: slice(x, t..<(t + 1)), batch: x.batch, loops: 3, cache: mixed)) }
        try g.close(try concatTime(parts), "mixed_loops/logits", "prefill 2 loops, decode 3")
        // Greedy generation.
        let prompt = try g.ids("greedy/prompt")
        var opts = SamplingOptions()
        opts.loops = c.maxLoopIters
        let gen = try MythosGenerator(model: g.model, prompt: prompt.ids, batch: prompt.batch, options: opts)
        var seqs = (0..<prompt.batch).map { b in Array(prompt.ids[(b * prompt.time)..<((b + 1) * prompt.time)]) }
        for _ in 0..<6 {
            let next = try gen.next()
            for b in 0..<prompt.batch { seqs[b].append(next[b]) }
        }
        let want = try g.ids("greedy/tokens")
        XCTAssertEqual(seqs.flatMap { $0 }, want.ids, "\(name): greedy tokens equal the reference's argmax path")
        print("[golden-detail] mythos \(name) greedy: \(seqs)")
    }

    /// Past the goldens' length: a 40-token forward (queries in causal blocks of 32) equals
    /// decoding token by token, and a prefill in two chunks (the second one attending to
    /// the cache causally), for both attentions.
    func testLongSequencesAgreeAcrossPaths() throws {
        for name in ["gqa", "mla"] {
            let g = try MythosGolden(name)
            let V = g.model.mythos!.config.vocabSize, T = 40, B = 2
            var rng = SplitMix64(seed: 5)
            let ids = (0..<(B * T)).map { _ in Int(rng.next() % UInt64(V)) }
            let part = { (r: Range<Int>) in (0..<B).flatMap { b in r.map { ids[b * T + $0] } } }
            let full = try g.model.logits(ids: ids, batch: B, loops: 3)
            let stepCache = try g.model.makeCache(batch: B)
            var parts: [Tensor] = []
            for t in 0..<T { parts.append(try g.model.logits(ids: part(t..<(t + 1)), batch: B, loops: 3, cache: stepCache)) }
            let chunkCache = try g.model.makeCache(batch: B)
            let chunks = [try g.model.logits(ids: part(0..<20), batch: B, loops: 3, cache: chunkCache),
                          try g.model.logits(ids: part(20..<T), batch: B, loops: 3, cache: chunkCache)]
            for (what, got) in [("token by token", try concatTime(parts)), ("two chunks", try concatTime(chunks))] {
                let a = got.toArray(), b = full.toArray()
                var err: Float = 0, scale: Float = 1
                for (x, y) in zip(a, b) { err = max(err, abs(x - y)); scale = max(scale, abs(y)) }
                goldenRecord("mythos \(name): T=40, \(what) vs one forward", err: err)
                XCTAssertLessThanOrEqual(err, 1e-5 * scale, "\(name): \(what)")
            }
        }
    }

    func testGQA() throws { try check("gqa") }
    func testMLA() throws { try check("mla") }
}
