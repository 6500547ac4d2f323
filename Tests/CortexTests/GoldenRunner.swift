import Cortex
import XCTest

/// Every golden case of one model folder (Tests/goldens/<name>), as made by
/// scripts/make_goldens.py: seq, step, step == seq, resets in both modes, [B] resets,
/// state carried over two calls, batch 1. Tolerance 1e-5 · max(1, max |reference|).
struct GoldenRunner {
    let g: Golden
    let B: Int

    init(_ name: String) throws {
        g = try Golden(name)
        B = try g.tensor("seq/x").shape[0]
    }

    /// assertClose with the model's name in the message.
    func close(_ got: Tensor, _ want: Tensor, _ what: String, file: StaticString = #filePath, line: UInt = #line) {
        assertClose(got, want, "\(g.name): \(what)", file: file, line: line)
    }

    func all() throws {
        try sequenceMode(); try stepMode(); try stepEqualsSequence(); try resetsSequence()
        try resetsStep(); try stateCarriedAcrossCalls(); try rowResetsInSequenceMode(); try batchOne()
        try stateBytesRoundTripContinuesIdentically()
        if !g.routeIDs.isEmpty { try rerouted() }
    }

    /// Routed adapters: streams change slots between two calls.
    func rerouted() throws {
        let s = try g.makeState(batch: B)
        close(try g.model.forward(try g.tensor("reroute/xa"), state: s), try g.tensor("reroute/ya"), "reroute first call")
        try s.setRouteIDs(try g.tensor("reroute/ids_b").toArray().map { Int($0) })
        close(try g.model.forward(try g.tensor("reroute/xb"), state: s), try g.tensor("reroute/yb"), "reroute second call")
        try checkState(s, "reroute")
    }

    func checkState(_ state: RecurrentState, _ caseName: String) throws {
        let want = g.stateTensors("\(caseName)/state/")
        XCTAssertEqual(Set(want.keys), Set(g.model.stateSpecs.map(\.name)), "state names mirror the reference TensorDict")
        for (name, t) in want { close(try state.tensor(named: name), t, "\(caseName) state \(name)") }
    }

    func stateFrom(_ caseName: String, batch: Int) throws -> RecurrentState {
        let s = try g.makeState(batch: batch)
        return try load(g.stateTensors("\(caseName)/init/"), into: s)
    }

    /// A state holding `values`, built as a state blob (so the codec's decoder is exercised too).
    func load(_ values: [String: Tensor], into s: RecurrentState) throws -> RecurrentState {
        let specs = g.model.stateSpecs
        let payload = try SafetensorsFile.write(specs.map { ($0.name, values[$0.name]!) }, metadata: ["format": "cortex-state"])
        var blob = StateCodec.magic
        func put(_ v: UInt64) { for k in 0..<8 { blob.append(UInt8(truncatingIfNeeded: v >> (8 * UInt64(k)))) } }
        put(1); put(g.model.fingerprint); put(UInt64(s.batch)); put(UInt64(payload.count))
        blob += payload
        put(FNV1a64.hash(Array(blob[8...])))
        return try g.bind(try StateCodec.decode(blob, model: g.model))
    }

    func sequenceMode() throws {
        let x = try g.tensor("seq/x")
        let s = try g.makeState(batch: B)
        close(try g.model.forward(x, state: s), try g.tensor("seq/y"), "seq y")
        try checkState(s, "seq")
    }

    func stepMode() throws {
        let x = try g.tensor("step/x")
        let s = try g.makeState(batch: B)
        var ys: [Tensor] = []
        for t in 0..<x.shape[1] { ys.append(try g.model.forward(try timeSlice(x, t), state: s)) }
        close(try stackTime(ys), try g.tensor("step/y"), "step y")
        try checkState(s, "step")
    }

    /// Step mode equals sequence mode — where the reference's own two paths agree. Where
    /// they do not (XL), each path is matched against its own golden instead, and this
    /// check asserts that Cortex reproduces the reference's discrepancy.
    func stepEqualsSequence() throws {
        let x = try g.tensor("seq/x")
        let (refGap, refTol) = maxError(try g.tensor("step/y"), try g.tensor("seq/y"))
        let a = try g.makeState(batch: B), b = try g.makeState(batch: B)
        let ySeq = try g.model.forward(x, state: a)
        var ys: [Tensor] = []
        for t in 0..<x.shape[1] { ys.append(try g.model.forward(try timeSlice(x, t), state: b)) }
        if refGap <= refTol {
            close(try stackTime(ys), ySeq, "step == sequence")
        } else {
            let (gap, _) = maxError(try stackTime(ys), ySeq)
            goldenRecord("\(g.name): the reference's step and sequence paths differ by \(refGap); Cortex's by", err: gap)
            XCTAssertEqual(gap, refGap, accuracy: 1e-4 * max(1, refGap), "\(g.name): Cortex reproduces the reference's step/sequence gap")
        }
    }

    func resetsSequence() throws {
        let s = try stateFrom("resets_seq", batch: B)
        let r = try g.tensor("resets_seq/resets").toArray().map { $0 != 0 }
        close(try g.model.forward(try g.tensor("resets_seq/x"), state: s, resets: r), try g.tensor("resets_seq/y"), "resets seq y")
        try checkState(s, "resets_seq")
    }

    func resetsStep() throws {
        let s = try stateFrom("resets_step", batch: B)
        let x = try g.tensor("resets_step/x")
        let r = try g.tensor("resets_step/resets")
        let T = x.shape[1]
        let mask = r.toArray()
        var ys: [Tensor] = []
        for t in 0..<T {
            let rows = (0..<B).map { mask[$0 * T + t] != 0 }
            ys.append(try g.model.forward(try timeSlice(x, t), state: s, resets: rows))
        }
        close(try stackTime(ys), try g.tensor("resets_step/y"), "resets step y")
        try checkState(s, "resets_step")
    }

    func stateCarriedAcrossCalls() throws {
        let s = try g.makeState(batch: B)
        close(try g.model.forward(try g.tensor("carry/xa"), state: s), try g.tensor("carry/ya"), "carry first call")
        close(try g.model.forward(try g.tensor("carry/xb"), state: s), try g.tensor("carry/yb"), "carry second call")
        try checkState(s, "carry")
    }

    func rowResetsInSequenceMode() throws {
        let s = try stateFrom("rows_seq", batch: B)
        let rows = try g.tensor("rows_seq/resets").toArray().map { $0 != 0 }
        close(try g.model.forward(try g.tensor("rows_seq/x"), state: s, resets: rows), try g.tensor("rows_seq/y"), "[B] resets seq y")
        try checkState(s, "rows_seq")
    }

    func batchOne() throws {
        let s = try g.makeState(batch: 1)
        close(try g.model.forward(try g.tensor("b1/x"), state: s), try g.tensor("b1/y"), "batch 1 y")
        try checkState(s, "b1")
    }

    func stateBytesRoundTripContinuesIdentically() throws {
        let x = try g.tensor("carry/xa"), x2 = try g.tensor("carry/xb")
        let s = try g.makeState(batch: B)
        _ = try g.model.forward(x, state: s)
        let restored = try g.bind(try StateCodec.decode(try StateCodec.encode(s), model: g.model))
        let a = try g.model.forward(x2, state: s), b = try g.model.forward(x2, state: restored)
        XCTAssertEqual(a.toArray(), b.toArray(), "a restored state continues bit-identically")
    }

}
