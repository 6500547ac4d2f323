@testable import Cortex
import XCTest

/// The OpenMythos KV cache in pages (KVLayer, PagePool): tiny pages give the goldens'
/// decode logits; a fork shares its prefix pages copy-on-write, copies only the page it
/// writes into, and each branch equals an unforked run of the same tokens.
final class MythosPagedCacheTests: XCTestCase {
    func model(_ name: String) throws -> Model { try Model.load(directory: repoRoot + "/Tests/goldens/mythos/\(name)/model") }

    func maxDiff(_ a: Tensor, _ b: Tensor) -> Float { zip(a.toArray(), b.toArray()).map { abs($0 - $1) }.max() ?? 0 }

    func testTinyPagesGiveTheGoldenDecode() throws {
        for name in ["gqa", "mla"] {
            let m = try model(name)
            let cases = try SafetensorsFile(path: repoRoot + "/Tests/goldens/mythos/\(name)/cases.safetensors")
            let x = try cases.tensor("full/ids"), ids = x.toArray().map { Int($0) }, B = x.shape[0], T = x.shape[1]
            let want = try cases.tensor("decode/logits").toArray()
            for pageTokens in [1, 3, 64] {
                let cache = try m.makeCache(batch: B, pageTokens: pageTokens)
                var got: [[Float]] = []
                got.append(try m.logits(ids: (0..<B).flatMap { b in (0..<4).map { ids[b * T + $0] } }, batch: B, cache: cache).toArray())
                for t in 4..<T { got.append(try m.logits(ids: (0..<B).map { ids[$0 * T + t] }, batch: B, cache: cache).toArray()) }
                // Reassemble [B, T, V] from the calls.
                let V = m.mythos!.config.vocabSize
                var flat = [Float](repeating: 0, count: B * T * V)
                for b in 0..<B {
                    for t in 0..<T {
                        let (call, tt, tp) = t < 4 ? (0, t, 4) : (t - 3, 0, 1)
                        for v in 0..<V { flat[(b * T + t) * V + v] = got[call][(b * tp + tt) * V + v] }
                    }
                }
                let err = zip(flat, want).map { abs($0 - $1) }.max()!, scale = max(1, want.map(abs).max()!)
                goldenRecord("mythos \(name): decode with \(pageTokens)-token pages", err: err)
                XCTAssertLessThanOrEqual(err, 1e-4 * scale)
            }
        }
    }

    func testForksShareThePrefixCopyOnWrite() throws {
        for name in ["gqa", "mla"] {
            let m = try model(name)
            let V = m.mythos!.config.vocabSize, B = 2
            var rng = SplitMix64(seed: 21)
            let tokens = { (n: Int) in (0..<(B * n)).map { _ in Int(rng.next() % UInt64(V)) } }
            let prefix = tokens(20), left = tokens(6), right = tokens(6)
            let a = try m.makeCache(batch: B, pageTokens: 8)
            _ = try m.logits(ids: prefix, batch: B, loops: 3, cache: a)
            let before = a.pageCounts
            let b = try a.fork()
            XCTAssertEqual(b.position, 20)
            XCTAssertEqual(a.pageCounts.shared, before.held, "after a fork every page is shared")
            let pool = a.layers.values.first!.pools[0], made = pool.pagesMade
            // Diverge: a continues with `left`, b with `right`, token by token.
            var ya: [Tensor] = [], yb: [Tensor] = []
            for t in 0..<6 {
                let pick = { (x: [Int]) in (0..<B).map { x[$0 * 6 + t] } }
                ya.append(try m.logits(ids: pick(left), batch: B, loops: 3, cache: a))
                yb.append(try m.logits(ids: pick(right), batch: B, loops: 3, cache: b))
            }
            // 20 tokens in 8-token pages: pages 0 and 1 stay shared; page 2 (tokens 16..<24)
            // is copied by the first writer (a), after which b holds the original alone and
            // writes in place; token 24 starts a new page in each branch.
            let layers = a.layers.count, streams = a.layers.values.first!.widths.count
            XCTAssertEqual(a.pageCounts.shared, 2 * B * streams * layers, "\(name): the full prefix pages stay shared")
            XCTAssertEqual(a.pageCounts.held, 4 * B * streams * layers)
            XCTAssertEqual(pool.pagesMade - made, B + 2 * B, "\(name): one copy per sequence, one new page per sequence per branch")
            // Each branch equals a cache that never forked.
            for (ids, got) in [(left, ya), (right, yb)] {
                let c = try m.makeCache(batch: B, pageTokens: 8)
                _ = try m.logits(ids: prefix, batch: B, loops: 3, cache: c)
                var worst: Float = 0
                for t in 0..<6 {
                    let y = try m.logits(ids: (0..<B).map { ids[$0 * 6 + t] }, batch: B, loops: 3, cache: c)
                    worst = max(worst, maxDiff(y, got[t]))
                }
                print("[mythos] \(name) forked branch vs an unforked cache: max abs difference \(worst)")
                XCTAssertEqual(worst, 0, "a branch computes exactly what an unforked cache does")
            }
            // Saved and restored (into the default 64-token pages), a fork decodes the same
            // next logits up to the summation order across pages.
            let restored = try MythosCacheCodec.decode(try MythosCacheCodec.encode(b), model: m)
            let next = (0..<B).map { _ in 1 }
            XCTAssertLessThanOrEqual(maxDiff(try m.logits(ids: next, batch: B, loops: 3, cache: restored),
                                             try m.logits(ids: next, batch: B, loops: 3, cache: b)), 1e-6)
        }
    }
}
