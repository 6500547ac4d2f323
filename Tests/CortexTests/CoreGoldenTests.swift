import Cortex
import XCTest

/// Every golden case of each core's model folders (cortexcore 0.1.6 reference).
final class CausalConv1dGoldenTests: XCTestCase {
    /// Depthwise, kernel 4 with bias and kernel 2 without.
    func testDepthwise() throws { try GoldenRunner("cconv_depthwise").all() }
    /// Channel mixing, kernels 3 and 5 (with and without bias), and a kernel-0 identity.
    func testChannelMixing() throws { try GoldenRunner("cconv_mixing").all() }
}

final class AGaLiTeGoldenTests: XCTestCase {
    /// Two blocks: 2 heads, eta 3, r 2; and 3 heads, eta 2, r 1, eps 1e-4.
    func testAGaLiTe() throws { try GoldenRunner("agalite").all() }
}

final class SLSTMGoldenTests: XCTestCase {
    /// Two blocks: 2 heads with a kernel-4 conv; 3 heads without conv.
    func testSLSTM() throws { try GoldenRunner("slstm").all() }
}

final class MLSTMGoldenTests: XCTestCase {
    /// Chunk 4 (chunkwise path over 9 steps, resets inside chunks) and a chunk-64 block.
    func testMLSTM() throws { try GoldenRunner("mlstm").all() }
}

final class XLGoldenTests: XCTestCase {
    /// mem_len 3 (rolling) with biases; 3 heads of 5 with mem_len 6, no biases.
    func testXL() throws { try GoldenRunner("xl").all() }
}

final class AxonGoldenTests: XCTestCase {
    /// Five AxonCell blocks: untraced linear map, SRHT (permuted, SiLU), full rank (tanh),
    /// SRHT unpermuted (ReLU), no mixing. SRHT goldens use the true Walsh–Hadamard transform.
    func testAxon() throws { try GoldenRunner("axon").all() }
    /// The SRHT through cortexcore's CPU butterfly ([a+b, a]), via "cortex_srht": "cpu_reference".
    func testSRHTCPUReference() throws { try GoldenRunner("axon_srht_cpu").all() }
    /// sLSTM with use_axon_layer: AxonLayer defaults (SRHT) and an explicit full-rank config.
    func testSLSTMAxonLayer() throws { try GoldenRunner("slstm_axon").all() }
    /// mLSTM with use_axon_layer + use_axon_qkv (chunkwise), and use_axon_qkv with a config.
    func testMLSTMAxon() throws { try GoldenRunner("mlstm_axon").all() }
    /// XL with use_axon_qkv: defaults (SRHT) and a diagonal config without mixing.
    func testXLAxonQKV() throws { try GoldenRunner("xl_axon").all() }
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

/// Scaffolds (cortexcore blocks) around several cores, adapters and Columns.
final class ScaffoldGoldenTests: XCTestCase {
    /// PreUp (LSTM; mLSTM on the raw branch), PreUpGated (sLSTM), PostUp (conv),
    /// PostUpGated (AGaLiTe).
    func testUpScaffolds() throws { try GoldenRunner("scaffolds_up").all() }
    /// Adapters around every scaffold kind: PreUp(LSTM), PassThrough(XL), PostUp(Axon),
    /// PreUpGated(conv), PostUpGated(AGaLiTe) (cortexcore cannot wrap a Column or an
    /// Adapter: it needs the base's cell); scalar and per-channel gates; GELU, SiLU, ReLU.
    func testAdapters() throws { try GoldenRunner("scaffolds_adapter").all() }
    /// Columns: three experts with top-2 prior and token refinement; one expert; two
    /// experts without refinement, 1/d_key scaling and unrestricted top-1; four experts with
    /// top-3 and uncentred refinement.
    func testColumns() throws { try GoldenRunner("column").all() }
}

/// Routed adapters (cortexcore's `routed_adapter`): every Linear kind, per-stream slots,
/// streams changing slots between calls.
final class RoutedAdapterTests: XCTestCase {
    func testRoutedGolden() throws { try GoldenRunner("routed").all() }

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
