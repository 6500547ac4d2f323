import Cortex
import Foundation
import XCTest

/// Cortex-only options (README, "Differences from the reference"): the SRHT compat
/// switch and `cortex_math: "consistent"` for mLSTM and XL, checked against the goldens.
final class ConsistentMathTests: XCTestCase {
    /// A golden's model with its config.json text edited.
    func variant(_ name: String, srht: AxonCore.Hadamard? = nil, _ edit: (String) -> String) throws -> Model {
        let dir = repoRoot + "/Tests/goldens/" + name + "/model"
        let config = try String(contentsOfFile: dir + "/config.json", encoding: .utf8)
        let weights = try Array(Data(contentsOf: URL(fileURLWithPath: dir + "/model.safetensors")))
        let edited = edit(config)
        XCTAssertNotEqual(edited, config, "the edit applies")
        return try Model(configBytes: Array(edited.utf8), weightBytes: weights, srht: srht)
    }

    func consistent(_ name: String, cell: String) throws -> Model {
        try variant(name) {
            $0.replacingOccurrences(of: "\"cell_type\": \"\(cell)\"", with: "\"cell_type\": \"\(cell)\", \"cortex_math\": \"consistent\"")
        }
    }

    /// A fresh state of `model` holding the golden's "<case>/init/" tensors.
    func warmState(_ model: Model, _ g: Golden, _ caseName: String, batch: Int) throws -> RecurrentState {
        let s = try model.makeState(batch: batch)
        for (name, t) in g.stateTensors("\(caseName)/init/") {
            let i = try s.index(of: name)
            let values = t.toArray()
            try s.write(index: i) { p in for k in values.indices { p[k] = values[k] } }
        }
        return s
    }

    func stepwise(_ model: Model, _ x: Tensor, _ s: RecurrentState, resets: Tensor? = nil) throws -> Tensor {
        let B = x.shape[0], T = x.shape[1]
        let mask = resets?.toArray()
        var ys: [Tensor] = []
        for t in 0..<T {
            let rows = mask.map { m in (0..<B).map { m[$0 * T + t] != 0 } }
            ys.append(try model.forward(try timeSlice(x, t), state: s, resets: rows))
        }
        return try stackTime(ys)
    }

    func testSRHTModesDiffer() throws {
        let g = try Golden("axon_srht_cpu")
        let exact = try variant("axon_srht_cpu") { $0.replacingOccurrences(of: "cpu_reference", with: "hadamard") }
        let y = try exact.forward(try g.tensor("seq/x"), state: try exact.makeState(batch: 3))
        let (err, _) = maxError(y, try g.tensor("seq/y"))
        print("[consistent] SRHT: true transform vs the CPU reference's butterfly: max |diff| = \(err)")
        XCTAssertGreaterThan(err, 1e-2, "the compat option changes the transform")
    }

    /// The model-wide switch (load option `srht`): a config that says nothing about the
    /// SRHT (true transform by default), loaded with `.cpuReference`, computes the CPU
    /// reference's butterfly everywhere, as if every Axon config said so.
    func testModelWideCPUReferenceSwitch() throws {
        let g = try Golden("axon_srht_cpu")
        let plain = { (c: String) in c.replacingOccurrences(of: ",\n     \"cortex_srht\": \"cpu_reference\"", with: "") }
        let m = try variant("axon_srht_cpu", srht: .cpuReference, plain)
        XCTAssertFalse(m.config.serialized.contains("cortex_srht"))
        assertClose(try m.forward(try g.tensor("seq/x"), state: try m.makeState(batch: 3)), try g.tensor("seq/y"),
                    "axon_srht_cpu: a plain config with the model-wide cpu_reference switch")
        let exact = try variant("axon_srht_cpu", plain)
        let (err, _) = maxError(try exact.forward(try g.tensor("seq/x"), state: try exact.makeState(batch: 3)), try g.tensor("seq/y"))
        XCTAssertGreaterThan(err, 1e-2, "without the switch the plain config computes the true transform")
    }

    /// mLSTM: with consistent math the chunkwise sequence path equals the reference's step
    /// path even with resets inside chunks, and nothing changes without resets.
    func testMLSTMConsistentSequenceEqualsReferenceStep() throws {
        let g = try Golden("mlstm")
        let model = try consistent("mlstm", cell: "mlstm")
        let B = 3
        assertClose(try model.forward(try g.tensor("seq/x"), state: try model.makeState(batch: B)),
                    try g.tensor("seq/y"), "mlstm consistent: no resets, unchanged")
        let x = try g.tensor("resets_seq/x"), resets = try g.tensor("resets_seq/resets")
        let (refGap, _) = maxError(try g.tensor("resets_seq/y"), try g.tensor("resets_step/y"))
        print("[consistent] mlstm: reference sequence vs step with resets inside chunks: \(refGap)")
        let s = try warmState(model, g, "resets_seq", batch: B)
        let y = try model.forward(x, state: s, resets: resets.toArray().map { $0 != 0 })
        assertClose(y, try g.tensor("resets_step/y"), "mlstm consistent: sequence == reference step path")
        let s2 = try warmState(model, g, "resets_step", batch: B)
        assertClose(try stepwise(model, x, s2, resets: resets), try g.tensor("resets_step/y"), "mlstm consistent: step path unchanged")
    }

    /// XL: with consistent math sequence mode equals step mode from a fresh state (with
    /// and without resets), and from a full memory both equal the reference's step path.
    func testXLConsistentStepEqualsSequence() throws {
        let g = try Golden("xl")
        let model = try consistent("xl", cell: "xl")
        let B = 3
        let x = try g.tensor("resets_seq/x"), resets = try g.tensor("resets_seq/resets")
        let mask = resets.toArray().map { $0 != 0 }
        for withResets in [false, true] {
            let ySeq = try model.forward(x, state: try model.makeState(batch: B), resets: withResets ? mask : nil)
            let yStep = try stepwise(model, x, try model.makeState(batch: B), resets: withResets ? resets : nil)
            assertClose(yStep, ySeq, "xl consistent: step == sequence from a fresh state (resets: \(withResets))")
        }
        let (gap, _) = maxError(try model.forward(try g.tensor("seq/x"), state: try model.makeState(batch: B)), try g.tensor("seq/y"))
        print("[consistent] xl: consistent vs reference sequence path from a fresh state: \(gap)")
        XCTAssertGreaterThan(gap, 1e-3, "the option changes the sequence path")
        let ref = try g.tensor("resets_step/y")
        assertClose(try model.forward(x, state: try warmState(model, g, "resets_seq", batch: B), resets: mask), ref,
                    "xl consistent: sequence == reference step path from a full memory")
        assertClose(try stepwise(model, x, try warmState(model, g, "resets_step", batch: B), resets: resets), ref,
                    "xl consistent: step == reference step path from a full memory")
        // A reset state is empty again, as a fresh one.
        let s = try model.makeState(batch: B)
        _ = try model.forward(x, state: s)
        try s.reset()
        assertClose(try model.forward(x, state: s), try model.forward(x, state: try model.makeState(batch: B)),
                    "xl consistent: a reset state behaves as a fresh one")
    }
}
