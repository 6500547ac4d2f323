@testable import Cortex
import XCTest

/// MLA's two attention forms on one random-weight layer (8 heads, rank 32): decoding
/// token by token (the absorbed form: heads score against the shared latent rows; with
/// B = 1 and a long cache the heads split over the two threads), chunks of 5 and 11
/// tokens (absorbed, causal inside the chunk), and one 96-token prefill (kv_up rows,
/// keys joined per head) give the same outputs. Tolerance 1e-5 · max(1, max |y|).
final class MythosAbsorbedTests: XCTestCase {
    func testAbsorbedDecodeEqualsPrefill() throws {
        try BLAS.ensureLoaded()
        var c = MythosConfig()
        c.dim = 64; c.nHeads = 8; c.attention = .mla; c.kvLoraRank = 32; c.qLoraRank = 48
        c.qkRopeHeadDim = 16; c.qkNopeHeadDim = 16; c.vHeadDim = 16; c.maxSeqLen = 256
        var rng = SplitMix64(seed: 11)
        func random(_ shape: [Int], _ s: Float) throws -> Tensor {
            let n = shape.reduce(1, *)
            return try Tensor(shape: shape, values: (0..<n).map { _ in s * (Float(rng.next() % 2001) / 1000 - 1) })
        }
        let H = c.nHeads, R = c.kvLoraRank, rope = c.qkRopeHeadDim, nope = c.qkNopeHeadDim
        let entries: [(String, Tensor)] = [
            ("q_down.weight", try random([c.qLoraRank, c.dim], 0.2)), ("q_norm.weight", try random([c.qLoraRank], 1)),
            ("q_up_nope.weight", try random([H * nope, c.qLoraRank], 0.2)), ("q_up_rope.weight", try random([H * rope, c.qLoraRank], 0.2)),
            ("kv_down.weight", try random([R + rope, c.dim], 0.2)), ("kv_norm.weight", try random([R], 1)),
            ("kv_up.weight", try random([H * (nope + c.vHeadDim), R], 0.2)), ("wo.weight", try random([c.dim, H * c.vHeadDim], 0.2)),
        ]
        let w = WeightSource(file: try SafetensorsFile(bytes: try SafetensorsFile.write(entries, metadata: [:])))
        let attention = try MythosAttention(w, "", c)
        XCTAssertNotNil(attention.absorbK)
        let table = RopeTable(dim: rope, maxLen: c.maxSeqLen, theta: c.ropeTheta)
        for B in [1, 3] {
            let T = 96, D = c.dim
            let x = try random([B, T, D], 1)
            let arena = Arena()
            func run(_ chunks: [Int]) throws -> [Float] {
                let layer = try attention.makeLayer(batch: B, limit: c.maxSeqLen, pageTokens: 16)
                var out = [Float](repeating: 0, count: B * T * D)
                var t0 = 0
                for n in chunks {
                    arena.reset()
                    let xs = try arena.take(B * n * D), ys = try arena.take(B * n * D)
                    for b in 0..<B { (xs + b * n * D).update(from: x.data + (b * T + t0) * D, count: n * D) }
                    try attention.forward(xs, batch: B, time: n, start: t0, rope: table, layer: layer, into: ys, arena: arena)
                    for b in 0..<B { for i in 0..<(n * D) { out[(b * T + t0) * D + i] = ys[b * n * D + i] } }
                    t0 += n
                }
                return out
            }
            let whole = try run([T])
            let scale = max(1, whole.map(abs).max()!)
            for (what, chunks) in [("token by token", [Int](repeating: 1, count: T)), ("chunks of 5 and 11", [5, 11, 5, 11, 64])] {
                let got = try run(chunks)
                let err = zip(got, whole).map { abs($0 - $1) }.max()!
                print("[mythos] MLA absorbed, B=\(B), \(what) vs one prefill: max abs difference \(err)")
                XCTAssertLessThanOrEqual(err, 1e-5 * scale, "B=\(B) \(what)")
            }
        }
    }
}
