import Cortex
import XCTest

/// The GDN hybrid sidecar layer against the PyTorch reference (cortex_swift.torch_sidecars)
/// (Tests/goldens/sidecars/gdn_layer): sequence mode (chunkwise delta rule), step mode
/// (recurrent), the state carried into a second call that rolls the window, batch 2.
/// Tolerance 1e-5 · max(1, max |reference|).
final class GDNSidecarTests: XCTestCase {
    let names = ["conv_q", "conv_k", "conv_v", "S", "win_k", "win_v", "win_n"]

    func close(_ got: UnsafePointer<Float>, _ want: Tensor, _ what: String) {
        assertClose(got, want, "gdn layer: " + what)
    }

    func testAgainstReference() throws {
        let dir = repoRoot + "/Tests/goldens/sidecars/gdn_layer"
        let cases = try SafetensorsFile(path: dir + "/cases.safetensors")
        // The layer's weights are stored under weights/<name>.
        var entries: [(String, Tensor)] = []
        for n in cases.names where n.hasPrefix("weights/") { entries.append((String(n.dropFirst(8)), try cases.tensor(n))) }
        let weights = WeightSource(file: try SafetensorsFile(bytes: try SafetensorsFile.write(entries, metadata: [:])))
        try BLAS.ensureLoaded()
        let layer = try GDNSidecarLayer(config: .init(dModel: 24, heads: 2, headDim: 8, window: 6), weights: weights, prefix: "")
        XCTAssertTrue(weights.unused.isEmpty, "every weight is used: \(weights.unused)")
        let h = try cases.tensor("seq/h"), h2 = try cases.tensor("carry/h")
        let B = h.shape[0], T = h.shape[1], D = h.shape[2]
        for mode in ["sequence", "step"] {
            // Fresh state tensors.
            let shapes = [[B, 3, 16], [B, 3, 16], [B, 3, 16], [B, 2, 8, 8], [B, 5, 16], [B, 5, 16], [B]]
            let st = try shapes.map { try Tensor(zeros: $0) }
            let state = GDNSidecarLayer.State(convQ: st[0].data, convK: st[1].data, convV: st[2].data, S: st[3].data,
                                              winK: st[4].data, winV: st[5].data, winN: st[6].data)
            let y = try Tensor(zeros: [B, T, D])
            if mode == "sequence" {
                try layer.run(h: h.data, y: y.data, batch: B, time: T, state: state, arena: Arena())
            } else {
                let ht = try Tensor(zeros: [B, 1, D]), yt = try Tensor(zeros: [B, 1, D])
                for t in 0..<T {
                    for b in 0..<B { (ht.data + b * D).update(from: h.data + (b * T + t) * D, count: D) }
                    try layer.run(h: ht.data, y: yt.data, batch: B, time: 1, state: state, arena: Arena())
                    for b in 0..<B { (y.data + (b * T + t) * D).update(from: yt.data + b * D, count: D) }
                }
            }
            close(y.data, try cases.tensor("seq/y"), "\(mode) y")
            for (i, n) in names.enumerated() { close(st[i].data, try cases.tensor("seq/state/" + n), "\(mode) state \(n)") }
            // A second call from that state (the window rolls past its size).
            let y2 = try Tensor(zeros: [B, h2.shape[1], D])
            try layer.run(h: h2.data, y: y2.data, batch: B, time: h2.shape[1], state: state, arena: Arena())
            close(y2.data, try cases.tensor("carry/y"), "\(mode), then a carried call: y")
            for (i, n) in names.enumerated() { close(st[i].data, try cases.tensor("carry/state/" + n), "\(mode) carried state \(n)") }
            withExtendedLifetime((st, y, y2)) {}
        }
        // A fresh sidecar (zero-initialised o_proj) adds exactly nothing.
        let zeroed = entries.map { $0.0 == "o_proj.weight" ? ($0.0, try! Tensor(zeros: $0.1.shape)) : $0 }
        let fresh = try GDNSidecarLayer(config: .init(dModel: 24, heads: 2, headDim: 8, window: 6),
            weights: WeightSource(file: try SafetensorsFile(bytes: try SafetensorsFile.write(zeroed, metadata: [:]))), prefix: "")
        let st = try [[B, 3, 16], [B, 3, 16], [B, 3, 16], [B, 2, 8, 8], [B, 5, 16], [B, 5, 16], [B]].map { try Tensor(zeros: $0) }
        let y = try Tensor(zeros: [B, T, D])
        y.data.update(repeating: 1, count: B * T * D)
        try fresh.run(h: h.data, y: y.data, batch: B, time: T,
                      state: .init(convQ: st[0].data, convK: st[1].data, convV: st[2].data, S: st[3].data, winK: st[4].data,
                                   winV: st[5].data, winN: st[6].data), arena: Arena())
        XCTAssertEqual(y.toArray().map(abs).max(), 0, "zero-initialised output is exactly zero")
        withExtendedLifetime(st) {}
    }
}
