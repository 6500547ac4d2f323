@testable import Cortex
import CKernels
import XCTest

/// INT8 weights: the quantisation rule, the `cxk_int8_linear` kernel against a float32
/// product with the dequantised weight (every path: few rows, tiles, strides, beta), and
/// whole models loaded with `int8: true` against the same model whose nn.Linear weights
/// are replaced by their dequantised values (so the only difference is arithmetic order),
/// plus the error against the float32 model itself (printed: the accuracy cost).
final class Int8Tests: XCTestCase {
    func testQuantisationRule() throws {
        let w = try Tensor(shape: [3, 4], values: [0.5, -1.27, 0.0, 0.635, 0, 0, 0, 0, 2.54, 1.27, -0.01, 0.03])
        let q = try Int8Matrix(quantizing: w)
        XCTAssertEqual(q.scales[0], 1.27 / 127)
        XCTAssertEqual(q.values[0..<4], [50, -127, 0, 64])   // 0.635/0.01 = 63.5 -> 64 (half to even)
        XCTAssertEqual(q.scales[1], 1e-8)                    // an all-zero row
        XCTAssertEqual(q.values[4..<8], [0, 0, 0, 0])
        XCTAssertEqual(q.values[8..<12], [127, 64, 0, 2])    // 1.27/0.02 = 63.5 -> 64, -0.01/0.02 = -0.5 -> 0 (even)
        XCTAssertEqual(q.byteCount, 12 + 12)
    }

    func testKernelAgainstDequantisedProduct() throws {
        var rng = SystemRandomNumberGenerator()
        try BLAS.ensureLoaded()
        for (m, n, k) in [(1, 37, 19), (2, 64, 128), (3, 33, 257), (4, 100, 64), (5, 70, 48), (17, 129, 200), (64, 256, 256), (9, 300, 5000)] {
            let w = try Tensor(shape: [n, k], values: (0..<n * k).map { _ in Float.random(in: -1...1, using: &rng) })
            let q = try Int8Matrix(quantizing: w)
            let dq = try q.dequantized()
            let lda = k + 3, ldc = n + 5
            let a = (0..<m * lda).map { _ in Float.random(in: -1...1, using: &rng) }
            for beta: Float in [0, 1, 0.5] {
                let c0 = (0..<m * ldc).map { _ in Float.random(in: -1...1, using: &rng) }
                var got = c0, want = c0
                a.withUnsafeBufferPointer { ap in
                    got.withUnsafeMutableBufferPointer { q.apply(m: m, a: ap.baseAddress!, lda: lda, c: $0.baseAddress!, ldc: ldc, beta: beta) }
                    want.withUnsafeMutableBufferPointer {
                        BLAS.gemm(transB: true, m: m, n: n, k: k, a: ap.baseAddress!, lda: lda, b: dq.data, ldb: k,
                                  c: $0.baseAddress!, ldc: ldc, beta: beta)
                    }
                }
                var err: Float = 0, scale: Float = 1
                for r in 0..<m {
                    for j in 0..<n { err = max(err, abs(got[r * ldc + j] - want[r * ldc + j])); scale = max(scale, abs(want[r * ldc + j])) }
                    for j in n..<ldc { XCTAssertEqual(got[r * ldc + j], c0[r * ldc + j], "padding column written") }
                }
                XCTAssertLessThanOrEqual(err, 1e-5 * scale, "m \(m) n \(n) k \(k) beta \(beta): \(err)")
            }
        }
    }

    /// The same directory with every nn.Linear weight replaced by its INT8 round trip.
    func dequantizedTwin(_ dir: String) throws -> (fp32: Model, int8: Model, twin: Model) {
        let config = try FileIO.read(dir + "/config.json"), bytes = try FileIO.read(dir + "/model.safetensors")
        let fp32 = try Model(configBytes: config, weightBytes: bytes)
        let int8 = try Model(configBytes: config, weightBytes: bytes, int8: true)
        let file = try SafetensorsFile(bytes: bytes)
        let linear = Set(int8.linearNames.map { $0 + ".weight" })
        var tensors: [(String, Tensor)] = []
        for name in file.names {
            let t = try file.tensor(name)
            tensors.append((name, linear.contains(name) ? try Int8Matrix(quantizing: t).dequantized() : t))
        }
        let twin = try Model(configBytes: config, weightBytes: try SafetensorsFile.write(tensors))
        XCTAssertTrue(int8.int8)
        XCTAssertFalse(fp32.int8)
        XCTAssertGreaterThan(int8.linearLayers, 0)
        XCTAssertEqual(int8.fingerprint, fp32.fingerprint)
        print("[int8] \(dir.split(separator: "/").suffix(2).joined(separator: "/")): \(int8.linearLayers) linear layers, "
              + "\(fp32.linearWeightBytes) -> \(int8.linearWeightBytes) bytes")
        // 1 byte per value + 4 per row (the scale): a quarter and a little, for these small layers
        XCTAssertLessThan(Double(int8.linearWeightBytes), 0.34 * Double(fp32.linearWeightBytes))
        return (fp32, int8, twin)
    }

    func compare(_ what: String, _ run: (Model) throws -> [Float], _ m: (fp32: Model, int8: Model, twin: Model),
                 tolerance: Float = 1e-5) throws {
        let a = try run(m.int8), b = try run(m.twin), c = try run(m.fp32)
        var err: Float = 0, drift: Float = 0, scale: Float = 1
        for i in a.indices { err = max(err, abs(a[i] - b[i])); drift = max(drift, abs(a[i] - c[i])); scale = max(scale, abs(c[i])) }
        print("[int8] \(what): INT8 vs dequantised float32 \(err); INT8 vs float32 \(drift) (|y| max \(scale))")
        XCTAssertLessThanOrEqual(err, tolerance * scale, what)
        XCTAssertGreaterThan(drift, 0, "\(what): INT8 changed nothing")
    }

    /// A safetensors file with every nn.Linear weight stored as `<name>.weight_int8` (I8)
    /// and `<name>.weight_scale` (F32): loads as INT8 without the flag, bitwise equal to
    /// quantising at load; a bad scale or dtype is refused.
    func testSavedInt8Weights() throws {
        let dir = repoRoot + "/Tests/goldens/spike/decoder_small/model"
        let config = try FileIO.read(dir + "/config.json"), bytes = try FileIO.read(dir + "/model.safetensors")
        let atLoad = try Model(configBytes: config, weightBytes: bytes, int8: true)
        let file = try SafetensorsFile(bytes: bytes)
        let linear = Set(atLoad.linearNames)
        func build(scale: (Int8Matrix) -> [Float], int8Dtype: String = "I8") throws -> [UInt8] {
            var entries: [(String, String, [Int], [UInt8])] = []
            for name in file.names {
                let t = try file.tensor(name)
                let floats = { (v: [Float]) in v.flatMap { withUnsafeBytes(of: $0.bitPattern.littleEndian, Array.init) } }
                if name.hasSuffix(".weight"), linear.contains(String(name.dropLast(7))) {
                    let q = try Int8Matrix(quantizing: t), base = String(name.dropLast(7))
                    entries.append((base + ".weight_int8", int8Dtype, t.shape, q.values.map { UInt8(bitPattern: $0) }))
                    entries.append((base + ".weight_scale", "F32", [q.rows], floats(scale(q))))
                } else {
                    entries.append((name, "F32", t.shape, floats(t.toArray())))
                }
            }
            var header: [(String, JSON)] = [], data: [UInt8] = []
            for (name, dtype, shape, raw) in entries {
                header.append((name, .object([("dtype", .string(dtype)), ("shape", .array(shape.map { .number(Double($0)) })),
                                              ("data_offsets", .array([.number(Double(data.count)), .number(Double(data.count + raw.count))]))])))
                data += raw
            }
            var h = Array(JSON.object(header).serialized.utf8)
            while h.count % 8 != 0 { h.append(0x20) }
            return withUnsafeBytes(of: UInt64(h.count).littleEndian, Array.init) + h + data
        }
        let saved = try Model(configBytes: config, weightBytes: try build(scale: { $0.scales }))
        XCTAssertTrue(saved.int8)
        XCTAssertEqual(saved.linearWeightBytes, atLoad.linearWeightBytes)
        let g = try Golden("spike/decoder_small")
        let n = try g.cases.integers("batch/neuron_id", shape: [61]), t = try g.cases.integers("batch/time_bin", shape: [61])
        let v = try g.cases.integers("batch/value", shape: [61]), o = try g.cases.integers("batch/offsets", shape: [6])
        let a = try saved.spikeDecoder!.decode(neurons: n, timeBins: t, values: v, offsets: o).toArray()
        let b = try atLoad.spikeDecoder!.decode(neurons: n, timeBins: t, values: v, offsets: o).toArray()
        XCTAssertEqual(a, b)
        XCTAssertThrowsError(try Model(configBytes: config, weightBytes: try build(scale: { $0.scales.map { _ in 0 } }))) {
            XCTAssertTrue("\($0)".contains("scale"), "\($0)")
        }
        XCTAssertThrowsError(try Model(configBytes: config, weightBytes: try build(scale: { $0.scales }, int8Dtype: "U8"))) {
            XCTAssertTrue("\($0)".contains("I8"), "\($0)")
        }
    }

    func stackRun(_ model: Model) throws -> [Float] {
        let s = try model.makeState(batch: 2)
        let D = model.inputSize, T = 7
        let x = (0..<2 * T * D).map { Float(sin(Double($0) * 0.37)) }
        var y = [Float](repeating: 0, count: 2 * T * model.outputSize)
        try x.withUnsafeBufferPointer { xp in
            try y.withUnsafeMutableBufferPointer { yp in
                try s.exclusive { try s.advance(x: xp.baseAddress!, batch: 2, time: T, resets: nil, into: yp.baseAddress!) }
            }
        }
        return y
    }

    func testStacks() throws {
        for name in ["scaffolds_up", "xl", "agalite", "axon", "column"] {
            try compare(name, stackRun, try dequantizedTwin(repoRoot + "/Tests/goldens/\(name)/model"))
        }
    }

    func testMythosAndSpikeDecoder() throws {
        for name in ["gqa", "mla"] {
            let m = try dequantizedTwin(repoRoot + "/Tests/goldens/mythos/\(name)/model")
            let ids = (0..<12).map { ($0 * 37) % m.fp32.mythos!.config.vocabSize }
            try compare("mythos \(name)", { try $0.logits(ids: ids, batch: 1).toArray() }, m, tolerance: 1e-4)
        }
        let m = try dequantizedTwin(repoRoot + "/Tests/goldens/spike/decoder_small/model")
        let g = try Golden("spike/decoder_small")
        let n = try g.cases.integers("batch/neuron_id", shape: [61]), t = try g.cases.integers("batch/time_bin", shape: [61])
        let v = try g.cases.integers("batch/value", shape: [61]), o = try g.cases.integers("batch/offsets", shape: [6])
        try compare("spike decoder", { try $0.spikeDecoder!.decode(neurons: n, timeBins: t, values: v, offsets: o).toArray() }, m)
    }
}
