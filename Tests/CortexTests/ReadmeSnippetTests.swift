import Cortex
import XCTest

/// The README's Swift block, compiled and run: `snippet()` holds its lines (between the
/// markers), and the test checks they are the README's, character for character.
final class ReadmeSnippetTests: XCTestCase {
    func snippet() throws -> [Int] {
        // README swift begin
        let model = try Model.load(directory: "examples/models/lstm_stack")
        let state = try model.makeState(batch: 4)
        let x = try Tensor(zeros: [4, 16, 64])        // [B, T, D_in]; [B, D_in] is one step
        let y = try model.forward(x, state: state)    // [4, 16, 64]; the state advances
        print(y.shape)
        // README swift end
        return y.shape
    }

    func testTheSwiftBlockIsThisCodeAndRuns() throws {
        let readme = String(decoding: try FileIO.read(repoRoot + "/README.md"), as: UTF8.self)
        let block = try XCTUnwrap(readme.components(separatedBy: "```swift\n").dropFirst().first?
            .components(separatedBy: "```").first)
        let source = String(decoding: try FileIO.read(repoRoot + "/Tests/CortexTests/ReadmeSnippetTests.swift"), as: UTF8.self)
        let body = try XCTUnwrap(source.components(separatedBy: "// README swift begin\n").dropFirst().first?
            .components(separatedBy: "        // README swift end").first)
        let here = body.split(separator: "\n", omittingEmptySubsequences: false)
            .map { $0.hasPrefix("        ") ? String($0.dropFirst(8)) : String($0) }.joined(separator: "\n")
        XCTAssertEqual(block, "import Cortex\n\n" + here, "README.md's swift block and ReadmeSnippetTests.snippet() differ")
        let cwd = FileManager.default.currentDirectoryPath
        XCTAssertTrue(FileManager.default.changeCurrentDirectoryPath(repoRoot))
        defer { _ = FileManager.default.changeCurrentDirectoryPath(cwd) }
        XCTAssertEqual(try snippet(), [4, 16, 64])
    }
}
