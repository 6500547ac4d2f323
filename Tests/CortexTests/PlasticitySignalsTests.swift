import Cortex
import XCTest

/// The fast-weight controller's inputs (surprise EMA, entropy, phase) and the segmenter's
/// surprise hysteresis, against hand-computed values.
final class PlasticitySignalsTests: XCTestCase {
    func testEntropyAndLoss() {
        let uniform = [Float](repeating: 0.3, count: 8)
        let (h, loss) = PlasticitySignals.entropy(uniform, count: 8, token: 2)
        XCTAssertEqual(h, log(8.0), accuracy: 1e-12)
        XCTAssertEqual(loss!, log(8.0), accuracy: 1e-12)
        let peaked: [Float] = [0, 0, 1000, 0]
        let (h2, l2) = PlasticitySignals.entropy(peaked, count: 4, token: 2)
        XCTAssertEqual(h2, 0, accuracy: 1e-12, "a certain prediction has zero entropy (and no overflow)")
        XCTAssertEqual(l2!, 0, accuracy: 1e-12)
        let logits: [Float] = [1, 2, 3]
        let z = exp(1.0) + exp(2.0) + exp(3.0), p = [exp(1.0) / z, exp(2.0) / z, exp(3.0) / z]
        let (h3, l3) = PlasticitySignals.entropy(logits, count: 3, token: 0)
        XCTAssertEqual(h3, -p.map { $0 * log($0) }.reduce(0, +), accuracy: 1e-12)
        XCTAssertEqual(l3!, -log(p[0]), accuracy: 1e-12)
    }

    func testSurpriseEMAAndPhase() {
        var s = PlasticitySignals(period: 4)
        let a = s.update(loss: 2, uncertainty: 1.5, reward: 0.25)
        XCTAssertEqual(a, [0, 1.5, 0.25, 0], "the EMA starts at the first loss")
        let b = s.update(loss: 4, uncertainty: 0.5)
        let ema = 0.99 * 2 + 0.01 * 4
        XCTAssertEqual(Double(b[0]), 4 - ema, accuracy: 1e-6, "surprise = loss − updated EMA")
        XCTAssertEqual(Double(b[3]), sin(2 * Double.pi / 4), accuracy: 1e-6)
        XCTAssertEqual(s.ema!, ema, accuracy: 1e-12)
    }

    func testSegmenterHysteresis() {
        var seg = Segmenter()
        // EMA 1: surprise 0.5 (< 1.2) stays closed; 1.5 opens; 1.1 (between) keeps it open;
        // 0.9 (< 1.05) closes it; 0 stays closed.
        let losses = [1.5, 2.5, 2.1, 1.9, 1.0]
        for (t, l) in losses.enumerated() {
            let h: [Float] = [Float(t), 1]
            let u: [Float] = [Float(t) * 10], v: [Float] = [Float(t) * -1]
            seg.observe(loss: l, ema: 1.0, h: h, u: u, v: v)
            XCTAssertEqual(seg.isOpen, t == 1 || t == 2, "step \(t)")
        }
        XCTAssertEqual(seg.segments.count, 1)
        let s = seg.segments[0]
        XCTAssertEqual(s.start, 1)
        XCTAssertEqual(s.end, 3)
        XCTAssertEqual(s.hMean, [2, 1])  // steps 1, 2, 3
        XCTAssertEqual(s.hMeanSquare, [Float((1 + 4 + 9)) / 3, 1])
        XCTAssertEqual(s.deltaU, [20], "U at close (30) − U at open (10)")
        XCTAssertEqual(s.deltaV, [-2])
    }
}
