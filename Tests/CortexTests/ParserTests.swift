import Cortex
import XCTest

/// Malformed inputs must produce a clear error, never a trap.
final class SafetensorsTests: XCTestCase {
    func header(_ json: String, data: [UInt8] = []) -> [UInt8] {
        var h = Array(json.utf8)
        while h.count % 8 != 0 { h.append(0x20) }
        var out: [UInt8] = []
        let n = UInt64(h.count)
        for k in 0..<8 { out.append(UInt8(truncatingIfNeeded: n >> (8 * UInt64(k)))) }
        return out + h + data
    }

    func assertParseError(_ bytes: [UInt8], contains: String, file: StaticString = #filePath, line: UInt = #line) {
        XCTAssertThrowsError(try SafetensorsFile(bytes: bytes), file: file, line: line) { e in
            let m = (e as? CortexError)?.message ?? "\(e)"
            XCTAssertTrue(m.contains(contains), "message '\(m)' lacks '\(contains)'", file: file, line: line)
        }
    }

    func testRoundTripAndConversions() throws {
        let t = try Tensor(shape: [2, 3], values: [1, -2, 3.5, 0, 1e-3, 7])
        let f = try SafetensorsFile(bytes: try SafetensorsFile.write([("a", t)], metadata: ["k": "v"]))
        XCTAssertEqual(try f.tensor("a").toArray(), t.toArray())
        XCTAssertEqual(f.metadata["k"], "v")
        // F16 [1.0, -2.0], BF16 [1.0], F64 [0.25]
        let f16 = header(#"{"h":{"dtype":"F16","shape":[2],"data_offsets":[0,4]},"b":{"dtype":"BF16","shape":[1],"data_offsets":[4,6]},"d":{"dtype":"F64","shape":[1],"data_offsets":[6,14]}}"#,
                         data: [0x00, 0x3C, 0x00, 0xC0, 0x80, 0x3F, 0, 0, 0, 0, 0, 0, 0xD0, 0x3F])
        let g = try SafetensorsFile(bytes: f16)
        XCTAssertEqual(try g.tensor("h").toArray(), [1, -2])
        XCTAssertEqual(try g.tensor("b").toArray(), [1])
        XCTAssertEqual(try g.tensor("d").toArray(), [0.25])
    }

    func testHalfSubnormalsAndSpecials() {
        XCTAssertEqual(Half.toFloat(0x0001), Float(5.960_464_5e-8))
        XCTAssertEqual(Half.toFloat(0x7C00), .infinity)
        XCTAssertTrue(Half.toFloat(0x7E00).isNaN)
        XCTAssertEqual(Half.toFloat(0x8000).sign, .minus)
    }

    func testMalformedCorpus() {
        let good = header(#"{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}"#, data: [0, 0, 128, 63])
        XCTAssertNoThrow(try SafetensorsFile(bytes: good))
        // Every truncation fails cleanly.
        for cut in 0..<good.count { XCTAssertThrowsError(try SafetensorsFile(bytes: Array(good[0..<cut]))) }
        var lie = good
        lie[0] = 0xFF; lie[1] = 0xFF
        assertParseError(lie, contains: "runs past the end")
        var huge = good
        for k in 0..<8 { huge[k] = 0xFF }
        assertParseError(huge, contains: "100 MB")
        assertParseError(header(#"{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}}"#, data: [UInt8](repeating: 0, count: 8)), contains: "overlaps")
        assertParseError(header(#"{"a":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}}"#, data: [UInt8](repeating: 0, count: 8)), contains: "gap")
        assertParseError(header(#"{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}"#, data: [UInt8](repeating: 0, count: 8)), contains: "cover")
        assertParseError(header(#"{"a":{"dtype":"F32","shape":[4294967296,4294967296,4294967296],"data_offsets":[0,4]}}"#, data: [0, 0, 0, 0]), contains: "overflow")
        assertParseError(header(#"{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,4]}}"#, data: [0, 0, 0, 0]), contains: "needs 8 bytes")
        assertParseError(header(#"{"a":{"dtype":"F33","shape":[1],"data_offsets":[0,4]}}"#, data: [0, 0, 0, 0]), contains: "unknown dtype")
        assertParseError(header(#"{"a":{"dtype":"F32","shape":[-1],"data_offsets":[0,4]}}"#, data: [0, 0, 0, 0]), contains: "invalid dimension")
        assertParseError(header(#"{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,400]}}"#, data: [0, 0, 0, 0]), contains: "needs 4 bytes")
        assertParseError(header(#"[1,2]"#), contains: "not a JSON object")
        assertParseError(header("{\"\u{1}\":1}"), contains: "control character")
        var bad = header(#"{"ab":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}"#, data: [0, 0, 0, 0])
        bad[10] = 0xFF  // inside the key: not UTF-8
        assertParseError(bad, contains: "UTF-8")
        // Integer tensors parse but do not load as weights.
        let ints = header(#"{"a":{"dtype":"I32","shape":[1],"data_offsets":[0,4]}}"#, data: [1, 0, 0, 0])
        XCTAssertThrowsError(try SafetensorsFile(bytes: ints).tensor("a"))
        XCTAssertThrowsError(try SafetensorsFile(bytes: good).tensor("missing"))
    }
}

final class JSONTests: XCTestCase {
    func testParsesAndRoundTrips() throws {
        let text = #"{"a":[1,2.5,-3e2,true,false,null],"b":{"c":"x\"y\u00e9\ud83d\ude00"}}"#
        let v = try JSON.parse(text)
        XCTAssertEqual(v["a"]?.array?.count, 6)
        XCTAssertEqual(v["a"]?.array?[2].double, -300)
        XCTAssertEqual(v["b"]?["c"]?.string, "x\"yé😀")
        XCTAssertEqual(try JSON.parse(v.serialized), v)
    }

    func testRejectsMalformed() {
        for bad in ["", "{", "[1,]", "{\"a\":}", "01x", "{\"a\":1,\"a\":2}", "\"\\ud800\"", "nul", "1 2",
                    String(repeating: "[", count: 10_000) + String(repeating: "]", count: 10_000), "\"\\q\"", "1.", "-",
                    "776E7777", "-1e400"] {  // overflowing literals would become infinities
            XCTAssertThrowsError(try JSON.parse(bad), "accepted: \(bad.prefix(20))")
        }
    }
}

final class KernelTests: XCTestCase {
    func testActivationsMatchLibm() {
        var worst: (Float, Float, Float) = (0, 0, 0)
        var xs: [Float] = stride(from: -30, through: 30, by: 0.0137).map { Float($0) }
        xs += [0, 1e-7, -1e-7, 1e-3, 88, -88, 100, -100]
        for x in xs {
            var v = Kernels.V(repeating: x)
            v = Kernels.exp(v)
            if x < 88 && x > -87 { worst.0 = max(worst.0, abs(v[0] - expf(x)) / expf(x)) }
            let s = Kernels.sigmoid(Kernels.V(repeating: x))[0]
            worst.1 = max(worst.1, abs(s - 1 / (1 + expf(-x))))
            let t = Kernels.tanh(Kernels.V(repeating: x))[0]
            worst.2 = max(worst.2, abs(t - tanhf(x)) / max(abs(tanhf(x)), 1e-30))
        }
        print("[kernels] exp max rel err \(worst.0), sigmoid max abs err \(worst.1), tanh max rel err \(worst.2)")
        XCTAssertLessThan(worst.0, 5e-7)
        XCTAssertLessThan(worst.1, 2e-7)
        XCTAssertLessThan(worst.2, 2e-6)
        XCTAssertTrue(Kernels.exp(Kernels.V(repeating: .nan))[0].isNaN)
        XCTAssertTrue(Kernels.tanh(Kernels.V(repeating: .nan))[0].isNaN)
    }

    func testNormsAndSoftmax() {
        var row: [Float] = [1, 2, 3, 4]
        row.withUnsafeMutableBufferPointer { Kernels.layerNorm($0.baseAddress!, rows: 1, n: 4, weight: nil, bias: nil, eps: 0) }
        XCTAssertEqual(row[0], -1.341_640_8, accuracy: 1e-6)
        var r2: [Float] = [3, 4]
        r2.withUnsafeMutableBufferPointer { Kernels.rmsNorm($0.baseAddress!, rows: 1, n: 2, weight: nil, eps: 0) }
        XCTAssertEqual(r2[1], 4 / (12.5 as Float).squareRoot(), accuracy: 1e-6)
        var s: [Float] = [1000, 1000, 1001]
        s.withUnsafeMutableBufferPointer { Kernels.softmax($0.baseAddress!, rows: 1, n: 3) }
        XCTAssertEqual(s.reduce(0, +), 1, accuracy: 1e-6)
        XCTAssertEqual(s[2] / s[0], expf(1), accuracy: 1e-4)
        var gl: [Float] = [1, -1, 0]
        gl.withUnsafeMutableBufferPointer { Kernels.gelu($0.baseAddress!, 3) }
        XCTAssertEqual(gl[0], 0.841_344_7, accuracy: 1e-6)
        var si: [Float] = [1]
        si.withUnsafeMutableBufferPointer { Kernels.silu($0.baseAddress!, 1) }
        XCTAssertEqual(si[0], 0.731_058_6, accuracy: 1e-6)
    }
}

final class ConfigTests: XCTestCase {
    func load(_ config: String) throws -> Model {
        let doc = #"{"format":"cortex","format_version":1,"architecture":"cortex_stack","config":"# + config + "}"
        return try Model(configBytes: Array(doc.utf8), weightBytes: try SafetensorsFile.write([]))
    }

    func assertError(_ config: String, contains: String, file: StaticString = #filePath, line: UInt = #line) {
        XCTAssertThrowsError(try load(config), file: file, line: line) { e in
            let m = (e as? CortexError)?.message ?? "\(e)"
            XCTAssertTrue(m.contains(contains), "'\(m)' lacks '\(contains)'", file: file, line: line)
        }
    }

    func testErrorsNameTheProblem() {
        assertError(#"{"d_hidden":4,"blocks":[{"block_type":"nope","cell":{"cell_type":"lstm"}}]}"#, contains: "unknown block type 'nope'")
        assertError(#"{"d_hidden":4,"blocks":[{"block_type":"passthrough","cell":{"cell_type":"mystery"}}]}"#, contains: "unknown cell type 'mystery'")
        assertError(#"{"d_hidden":4,"scaffolds":[{"scaffold_type":"passthrough","core":{"core_type":"mystery"}}]}"#, contains: "unknown cell type 'mystery'")
        assertError(#"{"d_hidden":4,"blocks":[{"block_type":"passthrough","cell":{"cell_type":"lstm","num_layers":2}}]}"#, contains: "num_layers 2")
        assertError(#"{"d_hidden":-4,"blocks":[]}"#, contains: "d_hidden")
        assertError(#"{"d_hidden":1e12,"blocks":[]}"#, contains: "d_hidden")
        assertError(#"{"blocks":[]}"#, contains: "d_hidden")
        assertError(#"{"d_hidden":4}"#, contains: "blocks")
        assertError(#"{"d_hidden":4,"blocks":[{"block_type":"passthrough","cell":{"cell_type":"lstm"}}]}"#, contains: "missing")
        assertError(#"{"d_hidden":4,"blocks":[],"routed_adapter":{"enabled":true}}"#, contains: "routed_adapter")
        assertError(#"{"d_hidden":4,"blocks":[{"block_type":"passthrough","cell":{"cell_type":"cconv","kernel_size":-1}}]}"#, contains: "blocks[0].cell.kernel_size is -1, must be >= 0")
        assertError(#"{"d_hidden":4,"blocks":[{"block_type":"passthrough","cell":{"cell_type":"cconv","channel_mixing":"yes"}}]}"#, contains: "channel_mixing must be a boolean")
        assertError(#"{"d_hidden":4,"blocks":[{"block_type":"passthrough","cell":{"cell_type":"cconv","kernel_size":2}}]}"#, contains: "conv.weight")
        assertError(#"{"d_hidden":6,"blocks":[{"block_type":"passthrough","cell":{"cell_type":"agalite","n_heads":4}}]}"#, contains: "n_heads must divide hidden_size")
        assertError(#"{"d_hidden":6,"blocks":[{"block_type":"passthrough","cell":{"cell_type":"agalite","n_heads":2,"r":0}}]}"#, contains: "blocks[0].cell.r is 0, must be >= 1")
        assertError(#"{"d_hidden":6,"blocks":[{"block_type":"passthrough","cell":{"cell_type":"slstm","num_heads":4}}]}"#, contains: "num_heads 4 must divide hidden_size 6")
        assertError(#"{"d_hidden":6,"blocks":[{"block_type":"passthrough","cell":{"cell_type":"slstm","num_heads":2,"use_axon_layer":true,"axon_layer_config":{"activation":"gelu"}}}]}"#, contains: "slstm cell: axon_layer_config: activation 'gelu' is not supported")
        assertError(#"{"d_hidden":6,"blocks":[{"block_type":"passthrough","cell":{"cell_type":"slstm","num_heads":2,"use_axon_layer":true,"axon_layer_config":[1]}}]}"#, contains: "blocks[0].cell.axon_layer_config must be an object, got a list")
        assertError(#"{"d_hidden":6,"blocks":[{"block_type":"passthrough","cell":{"cell_type":"axon","use_srht":true,"use_untraced_linear":false}}]}"#, contains: "use_srht needs a power-of-two hidden_size (got 6)")
        assertError(#"{"d_hidden":6,"blocks":[{"block_type":"passthrough","cell":{"cell_type":"axon","out_dim":3}}]}"#, contains: "out_dim 3 must equal hidden_size 6")
        assertError(#"{"d_hidden":6,"blocks":[{"block_type":"passthrough","cell":{"cell_type":"axon","activation":7}}]}"#, contains: "activation must be a string")
        assertError(#"{"d_hidden":6,"blocks":[{"block_type":"passthrough","cell":{"cell_type":"axon","cortex_srht":"fast"}}]}"#, contains: "cortex_srht must be")
        assertError(#"{"d_hidden":6,"blocks":[{"block_type":"passthrough","cell":{"cell_type":"axon"}}]}"#, contains: "blocks.0.cell.nu_log")
        assertError(#"{"d_hidden":6,"blocks":[{"block_type":"passthrough","cell":{"cell_type":"mlstm","num_heads":4}}]}"#, contains: "num_heads 4 must divide hidden_size 6")
        assertError(#"{"d_hidden":6,"blocks":[{"block_type":"passthrough","cell":{"cell_type":"mlstm","num_heads":2,"cortex_math":"fast"}}]}"#, contains: "cortex_math must be")
        assertError(#"{"d_hidden":4,"blocks":[{"block_type":"adapter","base_block":{"block_type":"column","experts":[{"block_type":"passthrough","cell":{"cell_type":"lstm"}}]}}]}"#, contains: "base_block must be a scaffold with a cell")
        assertError(#"{"d_hidden":4,"blocks":[{"block_type":"column","experts":[]}]}"#, contains: "experts must be a non-empty list")
        assertError(#"{"d_hidden":4,"blocks":[{"block_type":"preup","proj_factor":0.1,"cell":{"cell_type":"lstm"}}]}"#, contains: "int(proj_factor × d_hidden) is 0")
        assertError(#"{"d_hidden":6,"blocks":[{"block_type":"passthrough","cell":{"cell_type":"mlstm","num_heads":2,"chunk_size":0}}]}"#, contains: "blocks[0].cell.chunk_size is 0, must be >= 1")
        assertError(#"{"d_hidden":6,"blocks":[{"block_type":"passthrough","cell":{"cell_type":"xl","n_heads":4}}]}"#, contains: "n_heads 4 must divide hidden_size 6")
        assertError(#"{"d_hidden":6,"blocks":[{"block_type":"passthrough","cell":{"cell_type":"xl","n_heads":2,"use_axon_qkv":true}}]}"#, contains: "q_proj.cell.nu_log")
    }

    /// Every field the reference declares has one JSON type: a string, a null or a
    /// fraction where it wants an integer is refused with the field's path, where the
    /// parser used to fall back to the default silently.
    func testWrongTypedFieldsAreRefusedByPath() {
        func cell(_ fields: String, type: String = "lstm") -> String {
            #"{"d_hidden":4,"blocks":[{"block_type":"passthrough","cell":{"cell_type":"\#(type)",\#(fields)}}]}"#
        }
        assertError(cell(#""num_layers":"2""#), contains: #"blocks[0].cell.num_layers must be an integer, got a string ("2")"#)
        assertError(cell(#""num_layers":null"#), contains: "blocks[0].cell.num_layers must be an integer, not null")
        assertError(cell(#""num_layers":1.5"#), contains: "blocks[0].cell.num_layers must be an integer, got 1.5")
        assertError(cell(#""dropout":"0.5""#), contains: "blocks[0].cell.dropout must be a number")
        assertError(cell(#""bias":1"#), contains: "blocks[0].cell.bias must be a boolean, got a number")
        assertError(cell(#""proj_size":-1"#), contains: "proj_size is -1, must be >= 0")
        assertError(cell(#""hidden_size":"4""#), contains: "blocks[0].cell.hidden_size must be an integer")
        assertError(cell(#""attn_dropout":1.5"#, type: "xl"), contains: "attn_dropout is 1.5, must be <= 1")
        assertError(cell(#""cuda_seq_threshold":0"#, type: "axon"), contains: "cuda_seq_threshold is 0, must be >= 1")
        assertError(#"{"d_hidden":"4","blocks":[]}"#, contains: "d_hidden must be an integer")
        assertError(#"{"d_hidden":4,"blocks":{}}"#, contains: "blocks must be a list, got an object")
        assertError(#"{"d_hidden":4,"blocks":[],"post_norm":"false"}"#, contains: "post_norm must be a boolean")
        assertError(#"{"d_hidden":4,"blocks":[],"compile_blocks":0}"#, contains: "compile_blocks must be a boolean")
        assertError(#"{"d_hidden":4,"blocks":[{"block_type":"preup","proj_factor":"2","cell":{"cell_type":"lstm"}}]}"#,
                    contains: "blocks[0].proj_factor must be a number")
        assertError(#"{"d_hidden":4,"blocks":[{"block_type":"postup_gated","gru_bias":null,"cell":{"cell_type":"lstm"}}]}"#,
                    contains: "blocks[0].gru_bias must be a number, not null")
        assertError(#"{"d_hidden":4,"blocks":[{"block_type":"column","router":null,"experts":[{"block_type":"passthrough","cell":{"cell_type":"lstm"}}]}]}"#,
                    contains: "blocks[0].router must be an object, not null")
        assertError(#"{"d_hidden":4,"blocks":[{"block_type":"column","router":{"top_k":"1"},"experts":[{"block_type":"passthrough","cell":{"cell_type":"lstm"}}]}]}"#,
                    contains: "blocks[0].router.top_k must be an integer")
        assertError(#"{"d_hidden":4,"blocks":[{"block_type":"adapter","base_block":{"block_type":"passthrough","cell":{"cell_type":"lstm","num_layers":"3"}}}]}"#,
                    contains: "blocks[0].base_block.cell.num_layers must be an integer")
        assertError(#"{"d_hidden":4,"blocks":[],"routed_adapter":{"num_slots":2,"rank":"4"}}"#, contains: "routed_adapter.rank must be an integer")
        assertError(#"{"d_hidden":4,"scaffolds":[{"scaffold_type":"passthrough","core":{"core_type":"lstm","bias":"no"}}]}"#,
                    contains: "scaffolds[0].core.bias must be a boolean")
    }

    /// Fields the reference ignores load, and are listed in the model's info. A cell's
    /// hidden_size is one: the block decides the size, in the reference too.
    func testFieldsTheReferenceIgnoresAreReported() throws {
        let golden = try JSON.parse(try FileIO.read(repoRoot + "/Tests/goldens/lstm_stack/model/config.json"))
        guard case .object(var doc) = golden, let i = doc.firstIndex(where: { $0.0 == "config" }),
              case .object(var config) = doc[i].1, let b = config.firstIndex(where: { $0.0 == "blocks" }),
              case .array(var blocks) = config[b].1, case .object(var block) = blocks[0],
              let c = block.firstIndex(where: { $0.0 == "cell" }), case .object(var cell) = block[c].1 else {
            return XCTFail("unexpected golden config layout")
        }
        cell.removeAll { $0.0 == "hidden_size" }
        cell.append(("hidden_size", .number(1e9)))
        cell.append(("my_note", .string("x")))
        block[c].1 = .object(cell)
        blocks[0] = .object(block)
        config[b].1 = .array(blocks)
        config.append(("trainer", .object([("lr", .number(0.1))])))
        doc[i].1 = .object(config)
        let weights = try FileIO.read(repoRoot + "/Tests/goldens/lstm_stack/model/model.safetensors")
        let m = try Model(configBytes: Array(JSON.object(doc).serialized.utf8), weightBytes: weights)
        let ignored = m.info["ignored_config_fields"]?.array?.compactMap(\.string) ?? []
        print("[config] ignored fields: \(ignored)")
        XCTAssertEqual(ignored, ["blocks[0].cell.my_note", "trainer"])
        XCTAssertEqual(m.inputSize, try Model.load(directory: repoRoot + "/Tests/goldens/lstm_stack/model").inputSize)
    }

    /// cortexcore accepts kernel_size 0 with channel_mixing (a no-op conv, no weights);
    /// so does Cortex, rather than refusing a config the reference runs.
    func testKernelZeroWithMixingIsTheIdentityAsInTheReference() throws {
        let m = try load(#"{"d_hidden":4,"post_norm":false,"blocks":[{"block_type":"passthrough","cell":{"cell_type":"cconv","kernel_size":0,"channel_mixing":true}}]}"#)
        let x = try Tensor(shape: [2, 3, 4], values: (0..<24).map { Float($0) * 0.25 - 2 })
        XCTAssertEqual(try m.forward(x, state: try m.makeState(batch: 2)).toArray(), x.toArray())
    }

    func testDocumentChecks() {
        let w = (try? SafetensorsFile.write([])) ?? []
        for (doc, want) in [(#"{"format":"other"}"#, "not a Cortex model"),
                            (#"{"format":"cortex","format_version":2,"architecture":"cortex_stack","config":{}}"#, "format_version 2"),
                            (#"{"format":"cortex","format_version":1,"architecture":"nope","config":{}}"#, "unknown architecture 'nope'")] {
            XCTAssertThrowsError(try Model(configBytes: Array(doc.utf8), weightBytes: w)) { e in
                XCTAssertTrue("\(e)".contains(want), "\(e)")
            }
        }
    }

    func testSeedSpellingLoadsAndNamesStateAfterIt() throws {
        let g = try Golden("lstm_stack")
        var text = String(decoding: try FileIO.read(g.dir + "/model/config.json"), as: UTF8.self)
        text = text.replacingOccurrences(of: "\"blocks\"", with: "\"scaffolds\"")
            .replacingOccurrences(of: "\"block_type\"", with: "\"scaffold_type\"")
            .replacingOccurrences(of: "\"cell_type\"", with: "\"core_type\"")
            .replacingOccurrences(of: "\"cell\"", with: "\"core\"")
        let m = try Model(configBytes: Array(text.utf8), weightBytes: try FileIO.read(g.dir + "/model/model.safetensors"))
        XCTAssertEqual(m.stateSpecs.first?.name, "PassThroughScaffold_0.LSTMCore.h")
        let x = try g.tensor("seq/x")
        assertClose(try m.forward(x, state: try m.makeState(batch: 3)), try g.tensor("seq/y"), "scaffolds spelling: seq y")
    }

    func testExtraWeightsAreRefused() throws {
        let g = try Golden("lstm_stack")
        let file = try SafetensorsFile(path: g.dir + "/model/model.safetensors")
        var tensors = try file.names.map { ($0, try file.tensor($0)) }
        tensors.append(("stray.weight", try Tensor(zeros: [1])))
        XCTAssertThrowsError(try Model(configBytes: try FileIO.read(g.dir + "/model/config.json"),
                                       weightBytes: try SafetensorsFile.write(tensors))) { e in
            XCTAssertTrue("\(e)".contains("stray.weight"))
        }
    }
}
