@testable import Cortex
import XCTest

/// The Perceiver spike decoder ("architecture": "spike_decoder") against the
/// PyTorch reference goldens Tests/goldens/spike/decoder_small (cortex_swift.torch_spike,
/// within 1e-5 · max(1, max |reference|)): a batch with an empty request in the middle,
/// an empty request alone, a 300-event request; and the properties a server relies on:
/// requests are independent of their batch, event order does not matter, bad events are
/// refused with the field named.
final class SpikeDecoderTests: XCTestCase {
    struct Case {
        let neurons: [Int], times: [Int], values: [Int], offsets: [Int]
        let velocity: Tensor
    }

    func load() throws -> (Golden, SpikeDecoder) {
        let g = try Golden("spike/decoder_small")
        return (g, try XCTUnwrap(g.model.spikeDecoder))
    }

    func events(_ g: Golden, _ name: String) throws -> Case {
        Case(neurons: try g.cases.integers(name + "/neuron_id", shape: [g.cases.entries[name + "/neuron_id"]!.shape[0]]),
             times: try g.cases.integers(name + "/time_bin", shape: [g.cases.entries[name + "/time_bin"]!.shape[0]]),
             values: try g.cases.integers(name + "/value", shape: [g.cases.entries[name + "/value"]!.shape[0]]),
             offsets: try g.cases.integers(name + "/offsets", shape: [g.cases.entries[name + "/offsets"]!.shape[0]]),
             velocity: try g.tensor(name + "/velocity"))
    }

    func testGoldens() throws {
        let (g, dec) = try load()
        for name in ["batch", "empty", "long"] {
            let c = try events(g, name)
            let y = try dec.decode(neurons: c.neurons, timeBins: c.times, values: c.values, offsets: c.offsets)
            assertClose(y, c.velocity, "spike decoder: '\(name)'")
        }
        XCTAssertEqual(g.model.architecture, "spike_decoder")
        XCTAssertEqual(g.model.outputSize, 3)
    }

    func testRequestsAreIndependentOfTheirBatch() throws {
        let (g, dec) = try load()
        let c = try events(g, "batch")
        let whole = try dec.decode(neurons: c.neurons, timeBins: c.times, values: c.values, offsets: c.offsets).toArray()
        var worst: Float = 0
        for b in 0..<(c.offsets.count - 1) {
            let r = c.offsets[b]..<c.offsets[b + 1]
            let one = try dec.decode(neurons: Array(c.neurons[r]), timeBins: Array(c.times[r]), values: Array(c.values[r]),
                                     offsets: [0, r.count]).toArray()
            for o in 0..<3 { worst = max(worst, abs(one[o] - whole[b * 3 + o])) }
        }
        print("[spike] request alone vs in its batch: max abs difference \(worst)")
        XCTAssertLessThanOrEqual(worst, 1e-6)
        // The empty request in the batch equals an empty request alone (the latents' prior).
        let empty = try dec.decode(neurons: [], timeBins: [], values: [], offsets: [0, 0]).toArray()
        for o in 0..<3 { XCTAssertEqual(empty[o], whole[3 + o], accuracy: 1e-6) }
    }

    func testEventOrderDoesNotMatter() throws {
        let (g, dec) = try load()
        let c = try events(g, "long")
        let perm = Array((0..<c.neurons.count).reversed())
        let a = try dec.decode(neurons: c.neurons, timeBins: c.times, values: c.values, offsets: c.offsets).toArray()
        let b = try dec.decode(neurons: perm.map { c.neurons[$0] }, timeBins: perm.map { c.times[$0] },
                               values: perm.map { c.values[$0] }, offsets: c.offsets).toArray()
        for (x, y) in zip(a, b) { XCTAssertEqual(x, y, accuracy: 1e-6) }
    }

    func testBadEventsAreRefusedByName() throws {
        let (_, dec) = try load()
        func refused(_ n: [Int], _ t: [Int], _ v: [Int], _ o: [Int], _ needle: String, line: UInt = #line) {
            XCTAssertThrowsError(try dec.decode(neurons: n, timeBins: t, values: v, offsets: o), line: line) { e in
                XCTAssertTrue("\(e)".contains(needle), "\(e) should mention \(needle)", line: line)
            }
        }
        refused([40], [0], [0], [0, 1], "max_neurons")
        refused([0], [120], [0], [0, 1], "max_time_bins")
        refused([0], [0], [-1], [0, 1], "spike_value_buckets")
        refused([-3], [0], [0], [0, 1], "neuron_id -3")
        refused([0, 1], [0], [0, 0], [0, 2], "one length")
        refused([0], [0], [0], [0], "B + 1")
        refused([0], [0], [0], [0, 2], "end at the event count")
        refused([0, 1], [0, 0], [0, 0], [0, 2, 1, 2], "must not decrease")
        XCTAssertNoThrow(try dec.decode(neurons: [39], timeBins: [119], values: [7], offsets: [0, 1]))
    }

    func testConfigIsChecked() throws {
        func refused(_ text: String, _ needle: String, line: UInt = #line) {
            XCTAssertThrowsError(try SpikeDecoderConfig.parse(try JSON.parse(Array(text.utf8))), line: line) { e in
                XCTAssertTrue("\(e)".contains(needle), "\(e) should mention \(needle)", line: line)
            }
        }
        refused(#"{"hidden_dim": 24, "num_heads": 4, "head_dim": 5}"#, "head_dim")
        refused(#"{"latent_dim": 30, "num_heads": 4, "hidden_dim": 24, "head_dim": 6}"#, "latent_dim")
        refused(#"{"num_latents": 0}"#, "num_latents")
        refused(#"{"typo_field": 1}"#, "unknown field 'typo_field'")
        refused(#"{"mlp_ratio": -1}"#, "mlp_ratio")
        let xs = try SpikeDecoderConfig.parse(try JSON.parse(Array("{}".utf8)))
        XCTAssertEqual(xs.mlpDim, 1024)  // the defaults are XS
    }

    func testStateAPIIsRefused() throws {
        let (g, _) = try load()
        XCTAssertThrowsError(try g.model.makeState(batch: 1)) { XCTAssertTrue("\($0)".contains("decodes packed spike events")) }
    }
}
