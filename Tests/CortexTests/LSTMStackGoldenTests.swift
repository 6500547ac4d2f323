import Cortex
import XCTest

/// Parity with cortexcore 0.1.6 on the LSTM stack goldens (scripts/make_goldens.py).
/// Tolerance: max abs error ≤ 1e-5 · max(1, max |reference|), fp32.
final class LSTMStackGoldenTests: XCTestCase {
    var run: GoldenRunner!

    override func setUpWithError() throws { run = try GoldenRunner("lstm_stack") }

    func testSequenceMode() throws { try run.sequenceMode() }
    func testStepMode() throws { try run.stepMode() }
    func testStepEqualsSequence() throws { try run.stepEqualsSequence() }
    func testResetsSequence() throws { try run.resetsSequence() }
    func testResetsStep() throws { try run.resetsStep() }
    func testStateCarriedAcrossCalls() throws { try run.stateCarriedAcrossCalls() }
    func testRowResetsInSequenceMode() throws { try run.rowResetsInSequenceMode() }
    func testBatchOne() throws { try run.batchOne() }
    func testStateBytesRoundTripContinuesIdentically() throws { try run.stateBytesRoundTripContinuesIdentically() }

    func testArenaStopsGrowingInStepMode() throws {
        let s = try run.g.model.makeState(batch: 2)
        let x = try Tensor(zeros: [2, 24])
        _ = try run.g.model.forward(x, state: s)
        let cap = s.arena.capacity
        for _ in 0..<50 { _ = try run.g.model.forward(x, state: s) }
        XCTAssertEqual(s.arena.capacity, cap, "step scratch is sized once")
    }
}
