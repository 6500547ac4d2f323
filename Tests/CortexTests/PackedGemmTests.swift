import CKernels
import Cortex
import XCTest

/// The packed small-M kernel at every ISA level this CPU has (AVX-512, AVX2+FMA,
/// portable C) against a float64 reference, over ragged shapes (panel and block tails).
final class PackedGemmTests: XCTestCase {
    func testAgainstFloat64Reference() throws {
        var rng = SystemRandomNumberGenerator()
        let top = cx_packed_level()
        defer { _ = cx_packed_force_level(-1) }
        for level in 0...Int(top) {
            XCTAssertEqual(cx_packed_force_level(Int32(level)), 1)
            var worst: Double = 0
            for (m, n, k) in [(1, 1, 1), (1, 17, 5), (3, 33, 7), (4, 64, 16), (5, 70, 31), (9, 16, 64), (1, 1024, 256), (32, 100, 3)] {
                let a = (0..<(m * k)).map { _ in Float.random(in: -1...1, using: &rng) }
                let w = (0..<(n * k)).map { _ in Float.random(in: -1...1, using: &rng) }
                let c0 = (0..<(m * n)).map { _ in Float.random(in: -1...1, using: &rng) }
                let packed = try FloatBuffer(count: cx_packed_size(Int32(n), Int32(k)))
                cx_pack_weights(w, Int32(n), Int32(k), packed.pointer)
                for accumulate in [false, true] {
                    var c = c0
                    cx_packed_gemm(Int32(m), Int32(n), Int32(k), a, Int32(k), packed.pointer, &c, Int32(n), accumulate ? 1 : 0)
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
}
