@testable import Cortex
import XCTest

/// Model.forward(lanes:): many single-stream states advanced as one batch (what
/// cortex-serve does with recurrent sessions).
final class LaneTests: XCTestCase {
    func testLanesMatchEachStateAloneAndAdvanceIt() throws {
        let g = try Golden("lstm_stack")
        let model = g.model
        let n = 5, T = 7, D = model.inputSize
        var rng = SplitMix64(seed: 3)
        let x = try Tensor(zeros: [n, T, D])
        for i in 0..<x.count { x.data[i] = Float(rng.uniform() * 2 - 1) }
        // Reference: each stream alone, two calls (state carried across).
        let alone = try (0..<n).map { _ in try model.makeState(batch: 1) }
        let lanes = try (0..<n).map { _ in try model.makeState(batch: 1) }
        var maxErr: Float = 0
        for _ in 0..<2 {
            let y = try model.forward(lanes: lanes, x: x).toArray()
            for i in 0..<n {
                let xi = try Tensor(zeros: [1, T, D])
                xi.data.update(from: x.data + i * T * D, count: T * D)
                let yi = try model.forward(xi, state: alone[i]).toArray()
                for (a, b) in zip(yi, y[(i * yi.count)..<((i + 1) * yi.count)]) { maxErr = max(maxErr, abs(a - b)) }
            }
        }
        for i in 0..<n {
            for (k, spec) in model.allStateSpecs.enumerated() where !spec.derived {
                for (a, b) in zip(alone[i].tensors[k].toArray(), lanes[i].tensors[k].toArray()) { maxErr = max(maxErr, abs(a - b)) }
            }
        }
        goldenRecord("lanes: vs alone (5 streams, 2 calls of 7 steps)", err: maxErr, tol: 1e-5)
        XCTAssertLessThan(maxErr, 1e-5)
    }

    func testBadLanesAreRefusedAndChangeNothing() throws {
        let g = try Golden("lstm_stack")
        let model = g.model, D = model.inputSize
        let a = try model.makeState(batch: 1), b = try model.makeState(batch: 1)
        let x = try Tensor(zeros: [2, D])
        for i in 0..<x.count { x.data[i] = 0.5 }
        _ = try model.forward(lanes: [a, b], x: x)
        let before = a.tensors.map { $0.toArray() }
        func refused(_ states: [RecurrentState], _ x: Tensor, _ message: String) {
            XCTAssertThrowsError(try model.forward(lanes: states, x: x)) { XCTAssertTrue("\($0)".contains(message), "\($0)") }
        }
        refused([a, a], x, "appears twice")
        refused([a, try model.makeState(batch: 2)], x, "has batch 2")
        let other = try Model.load(directory: g.dir + "/model")
        refused([a, try other.makeState(batch: 1)], x, "another model")
        refused([a, b], try Tensor(zeros: [3, D]), "expected batch 2")
        // A busy lane state fails the whole call before anything moves.
        try b.exclusive { refused([a, b], x, "state 1 is in use") }
        XCTAssertEqual(a.tensors.map { $0.toArray() }, before)
    }
}
