import Cortex
import XCTest

/// Every golden case of every memory-stack golden folder, found by its manifest
/// (cortexcore 0.1.6 reference; what each folder holds is in its manifest and in
/// scripts/make_goldens.py): one core per folder (cconv_depthwise, cconv_mixing,
/// agalite, slstm, mlstm, xl, axon, the SRHT CPU butterfly, the Axon layers inside
/// sLSTM, mLSTM and XL), the scaffolds (PreUp, PreUpGated, PostUp, PostUpGated; adapters
/// around each with scalar and per-channel gates), Columns (top-k priors, token
/// refinement on and off), routed adapters, the auto builder's AXMS stack and the LSTM
/// stack.
final class StackGoldenTests: XCTestCase {
    func testEveryStackGoldenFolder() throws {
        XCTAssertGreaterThanOrEqual(stackGoldenNames.count, 17, "stack goldens found: \(stackGoldenNames)")
        for name in stackGoldenNames {
            try GoldenRunner(name).all()
        }
    }
}

/// XL caches its memory's keys and values between calls (derived state): writing the
/// state from outside must drop the cache, and a fresh cache must equal a warm one.
final class XLCacheTests: XCTestCase {
    func testWritingTheStateInvalidatesTheCache() throws {
        let g = try Golden("xl")
        let m = g.model
        let a = try m.makeState(batch: 3), b = try m.makeState(batch: 3)
        _ = try m.forward(try g.tensor("carry/xa"), state: a)   // a's cache: from xa
        _ = try m.forward(try g.tensor("carry/xb"), state: b)   // b's: from xb
        for spec in m.stateSpecs {                                // a := b, tensor by tensor
            let values = try b.tensor(named: spec.name).toArray()
            try a.write(index: try a.index(of: spec.name)) { p in for i in values.indices { p[i] = values[i] } }
        }
        let x = try g.tensor("seq/x")
        assertClose(try m.forward(x, state: a), try m.forward(x, state: b), "xl: state written from outside = its source")
        XCTAssertThrowsError(try a.index(of: "PassThroughBlock_0.XLCell.cortex_cache.k"), "caches are not addressable")
    }
}

/// Routed adapters (cortexcore's `routed_adapter`; their golden, every Linear kind with
/// per-stream slots changing between calls, runs with the other stack goldens).
final class RoutedAdapterTests: XCTestCase {
    func testRouteIDsAreRequiredAndChecked() throws {
        let g = try Golden("routed")
        let s = try g.model.makeState(batch: 3)
        let x = try g.tensor("seq/x")
        XCTAssertThrowsError(try g.model.forward(x, state: s)) { e in
            XCTAssertTrue("\(e)".contains("route ids"), "\(e)")
        }
        XCTAssertThrowsError(try s.setRouteIDs([0, 4, 1]), "slot 4 of 4")
        XCTAssertThrowsError(try s.setRouteIDs([0, -1, 1]))
        XCTAssertThrowsError(try s.setRouteIDs([0, 1]), "one id per stream")
        XCTAssertNil(s.routeIDList, "failed binds leave the state unbound")
        try s.setRouteIDs([1, 3, 0])
        XCTAssertEqual(s.routeIDList, [1, 3, 0])
        XCTAssertEqual(try s.clone().routeIDList, [1, 3, 0], "clones keep their slots")
        let other = try Golden("lstm_stack")
        XCTAssertThrowsError(try other.model.makeState(batch: 1).setRouteIDs([0]), "no adapters: refused")
    }

    /// `"enabled": false` means no adapters: the plain model loads, route ids refused.
    func testDisabledRoutedAdapterIsNoAdapter() throws {
        let dir = repoRoot + "/Tests/goldens/lstm_stack/model"
        var text = String(decoding: try FileIO.read(dir + "/config.json"), as: UTF8.self)
        text = text.replacingOccurrences(of: "\"routed_adapter\": null", with: "\"routed_adapter\": {\"enabled\": false, \"num_slots\": 3}")
        let m = try Model(configBytes: Array(text.utf8), weightBytes: try FileIO.read(dir + "/model.safetensors"))
        XCTAssertNil(m.routedAdapter)
        XCTAssertThrowsError(try m.makeState(batch: 1).setRouteIDs([0]))
    }

    /// Slot s of stream b gives the same output as a batch-1 run under slot s: streams
    /// never see each other's adapters.
    func testStreamsAreIndependent() throws {
        let g = try Golden("routed")
        let x = try g.tensor("seq/x")  // [3, T, D]
        let s = try g.makeState(batch: 3)
        let y = try g.model.forward(x, state: s).toArray()
        let T = x.shape[1], D = x.shape[2], ids = g.routeIDs["3"]!
        for b in 0..<3 {
            let xb = try Tensor(shape: [1, T, D], values: Array(x.toArray()[(b * T * D)..<((b + 1) * T * D)]))
            let sb = try g.model.makeState(batch: 1)
            try sb.setRouteIDs([ids[b]])
            let yb = try g.model.forward(xb, state: sb)
            let want = try Tensor(shape: [1, T, D], values: Array(y[(b * T * D)..<((b + 1) * T * D)]))
            assertClose(yb, want, "routed: stream \(b) alone (slot \(ids[b]))")
        }
    }
}
