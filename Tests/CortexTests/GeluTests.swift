@testable import Cortex
import XCTest

/// The vectorised exact-form GELU against the scalar erf definition, over the range
/// activations take (and the far tails).
final class GeluTests: XCTestCase {
    func testAgainstErf() {
        var xs: [Float] = stride(from: -12, through: 12, by: 0.001).map { Float($0) }
        xs += [0, -0, 1e-30, -1e-30, 30, -30, 100, -100]
        var ys = xs
        ys.withUnsafeMutableBufferPointer { Kernels.gelu($0.baseAddress!, $0.count) }
        var worst: Double = 0
        for (x, y) in zip(xs, ys) {
            let want = 0.5 * Double(x) * erfc(-Double(x) / 2.0.squareRoot())
            let err = abs(Double(y) - want) / max(1e-30, max(abs(want), 1e-3))
            worst = max(worst, err)
            XCTAssertTrue(y.isFinite, "gelu(\(x)) = \(y)")
        }
        print("[gelu] max error relative to max(|gelu|, 1e-3): \(worst)")
        XCTAssertLessThan(worst, 2e-6)  // float32: a few ulps (the fit is 1.2e-7; exp and rounding add the rest)
    }
}
