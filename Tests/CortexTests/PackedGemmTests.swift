import Foundation
import CKernels
import Cortex
import XCTest

/// The packed kernel at every ISA level this CPU has (AVX-512, AVX2+FMA, portable C)
/// against a float64 reference, over ragged shapes (panel and block tails, the few-row
/// and the many-row blocks); its bitwise promises; the row-wise C kernels.
final class PackedGemmTests: XCTestCase {
    func testAgainstFloat64Reference() throws {
        var rng = SystemRandomNumberGenerator()
        let top = cxk_packed_level()
        defer { _ = cxk_packed_force_level(-1) }
        for level in 0...Int(top) {
            XCTAssertEqual(cxk_packed_force_level(Int32(level)), 1)
            var worst: Double = 0
            for (m, n, k) in [(1, 1, 1), (1, 17, 5), (3, 33, 7), (4, 64, 16), (5, 70, 31), (9, 16, 64), (1, 1024, 256), (32, 100, 3), (13, 200, 37), (128, 80, 256)] {
                let a = (0..<(m * k)).map { _ in Float.random(in: -1...1, using: &rng) }
                let w = (0..<(n * k)).map { _ in Float.random(in: -1...1, using: &rng) }
                let c0 = (0..<(m * n)).map { _ in Float.random(in: -1...1, using: &rng) }
                let packed = try FloatBuffer(count: cxk_packed_size(Int32(n), Int32(k)))
                cxk_pack_weights(w, Int32(n), Int32(k), packed.pointer)
                for accumulate in [false, true] {
                    var c = c0
                    cxk_packed_gemm(Int32(m), Int32(n), Int32(k), a, Int32(k), packed.pointer, &c, Int32(n), accumulate ? 1 : 0)
                    for i in 0..<m {
                        for j in 0..<n {
                            var s = accumulate ? Double(c0[i * n + j]) : 0
                            for q in 0..<k { s += Double(a[i * k + q]) * Double(w[j * k + q]) }
                            worst = max(worst, abs(s - Double(c[i * n + j])) / max(1, abs(s)))
                        }
                    }
                }
            }
            print("[kernels] packed gemm level \(level): max rel error \(worst)")
            XCTAssertLessThan(worst, 1e-5)
        }
    }

    /// A row's result is the same bits whatever else shares the call: alone (m = 1, the
    /// few-row blocks), inside 13 or 40 rows (the many-row blocks), split over two
    /// threads or not; and AVX-512 and AVX2 agree bitwise (one FMA chain per output).
    func testRowResultsDoNotDependOnTheCall() throws {
        var rng = SystemRandomNumberGenerator()
        let (n, k) = (200, 96)
        let a = (0..<(40 * k)).map { _ in Float.random(in: -1...1, using: &rng) }
        let w = (0..<(n * k)).map { _ in Float.random(in: -1...1, using: &rng) }
        let packed = try FloatBuffer(count: cxk_packed_size(Int32(n), Int32(k)))
        cxk_pack_weights(w, Int32(n), Int32(k), packed.pointer)
        defer { _ = cxk_packed_force_level(-1); BLAS.setThreads(0) }
        var byLevel: [[Float]] = []
        let top = Int(cxk_packed_level())
        for level in 1...max(1, top) where level <= top {
            XCTAssertEqual(cxk_packed_force_level(Int32(level)), 1)
            var whole = [Float](repeating: 0, count: 40 * n)
            BLAS.setThreads(2)
            cxk_parallel_packed_gemm(40, Int32(n), Int32(k), a, Int32(k), packed.pointer, &whole, Int32(n), 0)
            for threads in [1, 2] {
                BLAS.setThreads(threads)
                var part = [Float](repeating: 0, count: 13 * n)
                cxk_parallel_packed_gemm(13, Int32(n), Int32(k), a, Int32(k), packed.pointer, &part, Int32(n), 0)
                XCTAssertEqual(Array(whole[0..<(13 * n)]), part, "13 rows vs 40, \(threads) threads, level \(level)")
                for r in [0, 7, 39] {
                    var one = [Float](repeating: 0, count: n)
                    a.withUnsafeBufferPointer { ap in
                        cxk_parallel_packed_gemm(1, Int32(n), Int32(k), ap.baseAddress! + r * k, Int32(k), packed.pointer, &one,
                                                Int32(n), 0)
                    }
                    XCTAssertEqual(Array(whole[(r * n)..<((r + 1) * n)]), one, "row \(r) alone, level \(level)")
                }
            }
            byLevel.append(whole)
        }
        if byLevel.count == 2 { XCTAssertEqual(byLevel[0], byLevel[1], "AVX2 and AVX-512 differ") }
        print("[kernels] packed gemm: rows bitwise equal across row counts, thread splits and \(byLevel.count) ISA level(s)")
    }

    /// RMSNorm, softmax and silu(g)·u (rowwise.c) at every ISA level against float64, over
    /// row lengths with 16-lane tails, enough rows to split over the threads, and NaN /
    /// -inf inputs.
    func testRowwiseKernels() throws {
        let top = Int(cxk_packed_level())
        defer { _ = cxk_packed_force_level(-1) }
        for level in 0...top {
            XCTAssertEqual(cxk_packed_force_level(Int32(level)), 1)
            var rng = SystemRandomNumberGenerator()
            for n in [1, 5, 16, 37, 256] {
                let rows = 130
                let x = (0..<(rows * n)).map { _ in Float.random(in: -4...4, using: &rng) }
                let w = (0..<n).map { _ in Float.random(in: 0.5...1.5, using: &rng) }
                var y = x
                Kernels.rmsNorm(&y, rows: rows, n: n, weight: w, eps: 1e-6)
                var s = x
                Kernels.softmax(&s, rows: rows, n: n, scale: 0.7)
                var worstNorm: Double = 0, worstSoftmax: Double = 0
                for r in 0..<rows {
                    let row = x[(r * n)..<((r + 1) * n)].map(Double.init)
                    let inv = 1 / (row.reduce(0) { $0 + $1 * $1 } / Double(n) + 1e-6).squareRoot()
                    let mx = row.max()!
                    let e = row.map { Foundation.exp(0.7 * ($0 - mx)) }, total = e.reduce(0, +)
                    for j in 0..<n {
                        worstNorm = max(worstNorm, abs(row[j] * inv * Double(w[j]) - Double(y[r * n + j])) / max(1, abs(row[j] * inv)))
                        worstSoftmax = max(worstSoftmax, abs(e[j] / total - Double(s[r * n + j])))
                    }
                }
                XCTAssertLessThan(worstNorm, 2e-6, "rmsnorm n=\(n)")
                XCTAssertLessThan(worstSoftmax, 2e-6, "softmax n=\(n)")
            }
            // silu(g)·u over a length with a tail, split over the threads.
            let count = 40_003
            let g = (0..<count).map { _ in Float.random(in: -20...20, using: &rng) }
            let u = (0..<count).map { _ in Float.random(in: -2...2, using: &rng) }
            var out = g
            cxk_silu_mul(&out, u, count)
            var worst: Double = 0
            for i in 0..<count {
                let x = Double(g[i]), ref = x / (1 + Foundation.exp(-x)) * Double(u[i])
                worst = max(worst, abs(ref - Double(out[i])) / max(1, abs(ref)))
            }
            XCTAssertLessThan(worst, 2e-6, "silu_mul")
            // NaN stays NaN; a row of -inf but one finite value puts all mass there (exp
            // clamps its input at -87.3, so the others get ~1e-38, as Kernels.exp).
            var special: [Float] = [1, .nan, 2, 3, -.infinity, -.infinity, 5, -.infinity]
            Kernels.softmax(&special, rows: 2, n: 4, scale: 1)
            XCTAssertTrue(special[0..<4].allSatisfy(\.isNaN), "a NaN row stays NaN: \(special[0..<4])")
            XCTAssertEqual(special[6], 1)
            XCTAssertTrue([special[4], special[5], special[7]].allSatisfy { $0 >= 0 && $0 < 1e-37 })
        }
        print("[kernels] rowwise: rmsnorm, softmax and silu·u within 2e-6 of float64 at ISA levels 0...\(top)")
    }
}
