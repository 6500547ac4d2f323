import Cortex
import Foundation
import XCTest

/// The synthetic tasks and the committed trained task models (scripts/train_tasks.py).
final class TaskTests: XCTestCase {
    let taskDirs = ["delayed_recall", "majority", "dyck"].map { repoRoot + "/examples/models/tasks/" + $0 }

    /// Cortex reproduces PyTorch's logits on the exported test set, hence its accuracy.
    func testTrainedModelsScoreAsInPyTorch() throws {
        for dir in taskDirs {
            let c = try TaskClassifier(directory: dir)
            let r = try c.report(options: .object([]), directory: dir)
            let acc = try XCTUnwrap(r["accuracy"]?.double), ref = try XCTUnwrap(r["pytorch_accuracy"]?.double)
            let err = try XCTUnwrap(r["max_logit_error"]?.double)
            print("[task] \(c.task.rawValue): Cortex \(acc), PyTorch \(ref) on \(r["samples"]?.int ?? 0) test sequences; max logit error \(err)")
            XCTAssertEqual(acc, ref, "\(c.task.rawValue): same accuracy as PyTorch")
            XCTAssertLessThanOrEqual(err, 1e-4, "\(c.task.rawValue): logits match PyTorch")
            // Fresh sequences from Cortex's own generator: the model solves the task.
            let g = try c.report(options: try JSON.parse(#"{"source": "generated", "samples": 500, "seed": 7}"#), directory: dir)
            let fresh = try XCTUnwrap(g["accuracy"]?.double)
            print("[task] \(c.task.rawValue): \(fresh) on 500 generated sequences")
            XCTAssertGreaterThanOrEqual(fresh, 0.95)
        }
    }

    func testGeneratorsAreDeterministicAndLabelCorrectly() throws {
        let params = try JSON.parse(#"{"delay": 5, "length": 30, "n_pairs": 6}"#)
        for task in SyntheticTask.allCases {
            let a = try task.generate(count: 200, parameters: params, seed: 3)
            let b = try task.generate(count: 200, parameters: params, seed: 3)
            XCTAssertEqual(a.tokens, b.tokens)
            XCTAssertEqual(a.labels, b.labels)
            XCTAssertNotEqual(a.tokens, try task.generate(count: 200, parameters: params, seed: 4).tokens)
            let positives = a.labels.filter { $0 == 1 }.count
            XCTAssertTrue((40...160).contains(positives), "\(task): \(positives) positives of 200")
            for (seq, label) in zip(a.tokens, a.labels) {
                XCTAssertTrue(seq.allSatisfy { $0 >= 0 && $0 < task.vocabSize })
                switch task {
                case .delayedRecall:
                    XCTAssertEqual(seq.count, 6); XCTAssertEqual(seq[0], label); XCTAssertTrue(seq.dropFirst().allSatisfy { $0 == 2 })
                case .majority:
                    XCTAssertEqual(label, seq.filter { $0 == 1 }.count > seq.filter { $0 == 2 }.count ? 1 : 0)
                case .dyck:
                    var depth = 0, ok = true
                    for tok in seq { depth += tok == 0 ? 1 : -1; if depth < 0 { ok = false } }
                    XCTAssertEqual(label, ok && depth == 0 ? 1 : 0, "dyck label = well-formed")
                }
            }
        }
    }

    func testBadInputIsRefused() throws {
        let c = try TaskClassifier(directory: taskDirs[0])
        XCTAssertThrowsError(try c.logits([[0, 1, 7]])) { XCTAssertTrue("\($0)".contains("outside the vocabulary")) }
        XCTAssertThrowsError(try c.logits([[0, 1], [0]])) { XCTAssertTrue("\($0)".contains("one length")) }
        XCTAssertThrowsError(try c.report(options: try JSON.parse(#"{"source": "web"}"#), directory: taskDirs[0]))
    }
}
