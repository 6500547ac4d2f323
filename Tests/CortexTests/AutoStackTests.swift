import Cortex
import Foundation
import XCTest

/// The auto-stack builder against cortexcore's `build_cortex_auto_config`.
final class AutoStackTests: XCTestCase {
    func testRecipesGiveTheReferenceConfigs() throws {
        let doc = try JSON.parse(try FileIO.read(repoRoot + "/Tests/goldens/auto_configs.json"))
        let cases = try XCTUnwrap(doc["cases"]?.array)
        XCTAssertGreaterThanOrEqual(cases.count, 6)
        for c in cases {
            let recipe = try XCTUnwrap(c["recipe"]), want = try XCTUnwrap(c["config"])
            let got = try AutoStack.config(recipe: recipe)
            XCTAssertEqual(got.serialized, want.serialized, "recipe \(recipe.serialized)")
            print("[auto] \(recipe.serialized): identical config (\(got.serialized.count) bytes)")
        }
    }

    /// A stack built from a recipe loads the reference module's state_dict and matches it.
    func testBuiltStackRunsTheReferenceWeights() throws {
        let g = try Golden("auto_axms")
        let recipe = try JSON.parse(#"{"d_hidden": 16, "num_layers": 2}"#)  // the default: AXMS
        let config = try AutoStack.config(recipe: recipe)
        let exported = try JSON.parse(try FileIO.read(g.dir + "/model/config.json"))
        XCTAssertEqual(config.serialized, exported["config"]?.serialized, "the recipe gives the exported config")
        let doc = JSON.object([("format", .string("cortex")), ("format_version", .number(1)),
                               ("architecture", .string("cortex_stack")), ("config", config)])
        let m = try Model(configBytes: Array(doc.serialized.utf8), weightBytes: try FileIO.read(g.dir + "/model/model.safetensors"))
        assertClose(try m.forward(try g.tensor("seq/x"), state: try m.makeState(batch: 3)), try g.tensor("seq/y"), "auto stack: seq y from the builder's config")
    }

    func testBadRecipesAreRefused() {
        let cases: [(String, String)] = [
            (#"{"num_layers": 2}"#, "d_hidden"),
            (#"{"d_hidden": 8, "pattern": "AZ"}"#, "unknown token at position 1"),
            (#"{"d_hidden": 8, "pattern": "A Q"}"#, "unknown token 'Q'"),
            (#"{"d_hidden": 8, "num_layers": 2, "pattern": ["A"]}"#, "pattern list length 1 != num_layers 2"),
            (#"{"d_hidden": 8, "custom_map": {"Q": {"cell": {"cell_type": "lstm"}}}}"#, "needs a block_type"),
            (#"{"d_hidden": 8, "overrides": [{"mem_len": 3}]}"#, "an override needs"),
            (#"{"d_hidden": 8, "colour": "red"}"#, "unknown recipe field 'colour'"),
            (#"{"d_hidden": 8, "layers": [[{"block_type": "passthrough", "cell": {"cell_type": "gru"}}]]}"#, "unknown cell type 'gru'"),
        ]
        for (text, want) in cases {
            XCTAssertThrowsError(try AutoStack.config(recipe: try JSON.parse(text))) { e in
                let m = (e as? CortexError)?.message ?? "\(e)"
                XCTAssertTrue(m.contains(want), "'\(m)' lacks '\(want)'")
            }
        }
    }
}
