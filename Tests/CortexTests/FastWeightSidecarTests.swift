import Cortex
import XCTest

/// The fast-weight sidecar layer against the PyTorch reference (cortex_swift.torch_sidecars)
/// (Tests/goldens/sidecars/fast_weights), gate and two-way mixing: a sequence from the
/// seeded initial U (controller signals trip the uncertainty guard on some tokens), a
/// carried second call, batch 2, and an exactly-zero output at init.
final class FastWeightSidecarTests: XCTestCase {
    func close(_ got: UnsafePointer<Float>, _ want: Tensor, _ what: String) {
        assertClose(got, want, "fast-weight layer: " + what)
    }

    func testAgainstReference() throws {
        let cases = try SafetensorsFile(path: repoRoot + "/Tests/goldens/sidecars/fast_weights/cases.safetensors")
        try BLAS.ensureLoaded()
        for mode in ["gate", "two_way"] {
            var entries: [(String, Tensor)] = []
            let prefix = mode + "/weights/"
            for n in cases.names where n.hasPrefix(prefix) { entries.append((String(n.dropFirst(prefix.count)), try cases.tensor(n))) }
            let weights = WeightSource(file: try SafetensorsFile(bytes: try SafetensorsFile.write(entries, metadata: [:])))
            var cfg = FastWeightSidecarLayer.Config(dModel: 20, heads: 2, headDim: 8, rank: 3)
            cfg.alphaMax = 0.5
            cfg.twoWay = mode == "two_way"
            let layer = try FastWeightSidecarLayer(config: cfg, weights: weights, prefix: "")
            XCTAssertTrue(weights.unused.isEmpty, "\(weights.unused)")
            let h = try cases.tensor(mode + "/seq/h"), sig = try cases.tensor(mode + "/seq/signals")
            let B = h.shape[0], T = h.shape[1], D = h.shape[2]
            let U = try Tensor(zeros: [B, 2, 8, 3]), V = try Tensor(zeros: [B, 2, 3, 8]), y = try Tensor(zeros: [B, T, D])
            layer.initState(batch: B, u: U.data, v: V.data)
            try layer.run(h: h.data, signals: sig.data, y: y.data, batch: B, time: T, u: U.data, v: V.data, arena: Arena())
            close(y.data, try cases.tensor(mode + "/seq/y"), "\(mode) y")
            close(U.data, try cases.tensor(mode + "/seq/state/U"), "\(mode) U")
            close(V.data, try cases.tensor(mode + "/seq/state/V"), "\(mode) V")
            let h2 = try cases.tensor(mode + "/carry/h"), sig2 = try cases.tensor(mode + "/carry/signals")
            let y2 = try Tensor(zeros: [B, h2.shape[1], D])
            try layer.run(h: h2.data, signals: sig2.data, y: y2.data, batch: B, time: h2.shape[1], u: U.data, v: V.data,
                          arena: Arena())
            close(y2.data, try cases.tensor(mode + "/carry/y"), "\(mode) carried call y")
            close(U.data, try cases.tensor(mode + "/carry/state/U"), "\(mode) carried U")
            close(V.data, try cases.tensor(mode + "/carry/state/V"), "\(mode) carried V")
            // A fresh sidecar (zero-initialised o_proj) adds exactly nothing.
            let zeroed = entries.map { $0.0 == "o_proj.weight" ? ($0.0, try! Tensor(zeros: $0.1.shape)) : $0 }
            let fresh = try FastWeightSidecarLayer(config: cfg, weights: WeightSource(
                file: try SafetensorsFile(bytes: try SafetensorsFile.write(zeroed, metadata: [:]))), prefix: "")
            layer.initState(batch: B, u: U.data, v: V.data)
            y.data.update(repeating: 1, count: B * T * D)
            try fresh.run(h: h.data, signals: sig.data, y: y.data, batch: B, time: T, u: U.data, v: V.data, arena: Arena())
            XCTAssertEqual(y.toArray().map(abs).max(), 0, "\(mode): zero-initialised output is exactly zero")
            withExtendedLifetime((U, V, y, y2)) {}
        }
    }
}
