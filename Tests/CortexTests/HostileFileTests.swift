import Cortex
import XCTest

#if canImport(Glibc)
import Glibc
#endif

/// Files that must be refused quickly, without reading or allocating what they claim:
/// a 30 GB sparse weights file, a named pipe, a header of 200,000 entries. Each is a
/// model folder with a valid config, loaded through `Model.load`.
final class HostileFileTests: XCTestCase {
    func folder(_ name: String) throws -> String {
        let dir = (getenv("TMPDIR").map { String(cString: $0) } ?? "/tmp") + "/cortex-hostile-\(getpid())-\(name)"
        mkdir(dir, 0o755)
        let config = try FileIO.read(repoRoot + "/Tests/goldens/lstm_stack/model/config.json")
        try FileIO.writeAtomic(dir + "/config.json", config)
        return dir
    }

    /// Load `dir`, expect a refusal, return its message and the seconds it took.
    func refusal(_ dir: String) -> (String, Double) {
        let t0 = monotonicSeconds()
        do {
            _ = try Model.load(directory: dir)
            XCTFail("\(dir) loaded")
            return ("", 0)
        } catch let e as CortexError {
            return (e.message, monotonicSeconds() - t0)
        } catch {
            XCTFail("\(error)")
            return ("", 0)
        }
    }

    func sparseFile(_ path: String, header: [UInt8], size: Int) {
        let fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0o644)
        var len = UInt64(header.count).littleEndian
        _ = withUnsafeBytes(of: &len) { write(fd, $0.baseAddress, 8) }
        _ = header.withUnsafeBytes { write(fd, $0.baseAddress, header.count) }
        XCTAssertEqual(ftruncate(fd, off_t(size)), 0)
        close(fd)
    }

    func testHugeSparseFileIsRefusedFromItsHeader() throws {
        let dir = try folder("huge")
        defer { unlink(dir + "/model.safetensors"); unlink(dir + "/config.json"); rmdir(dir) }
        // A header that claims one small tensor: the 30 GB of data cannot be covered.
        let header = Array(#"{"blocks.0.cell.net.weight_ih_l0":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}"#.utf8)
        sparseFile(dir + "/model.safetensors", header: header, size: 30 << 30)
        let (message, seconds) = refusal(dir)
        print("[hostile] 30 GB sparse file: \(seconds) s: \(message)")
        XCTAssertTrue(message.contains("data section"), message)
        XCTAssertLessThan(seconds, 1.0)
        // An 8-byte header length past the limit, in a 30 GB file.
        sparseFile(dir + "/model.safetensors", header: [], size: 30 << 30)
        let fd = open(dir + "/model.safetensors", O_WRONLY)
        var big = UInt64(1 << 40).littleEndian
        _ = withUnsafeBytes(of: &big) { pwrite(fd, $0.baseAddress, 8, 0) }
        close(fd)
        let (m2, s2) = refusal(dir)
        print("[hostile] 30 GB file, 1 TB header length: \(s2) s: \(m2)")
        XCTAssertTrue(m2.contains("exceeds the 100 MB limit"), m2)
    }

    func testNamedPipeIsRefusedWithoutBlocking() throws {
        let dir = try folder("fifo")
        defer { unlink(dir + "/model.safetensors"); unlink(dir + "/config.json"); rmdir(dir) }
        XCTAssertEqual(mkfifo(dir + "/model.safetensors", 0o644), 0)
        let (message, seconds) = refusal(dir)
        print("[hostile] FIFO: \(seconds) s: \(message)")
        XCTAssertTrue(message.contains("not a regular file"), message)
        XCTAssertLessThan(seconds, 1.0)
        XCTAssertThrowsError(try FileIO.read(dir + "/model.safetensors"))  // the state-file path too
    }

    func testHeaderOfManyEntriesIsRefusedBeforeParsing() throws {
        let dir = try folder("entries")
        defer { unlink(dir + "/model.safetensors"); unlink(dir + "/config.json"); rmdir(dir) }
        var header = "{"
        for i in 0..<200_000 { header += (i > 0 ? "," : "") + #""t\#(i)":{"dtype":"F32","shape":[0],"data_offsets":[0,0]}"# }
        header += "}"
        sparseFile(dir + "/model.safetensors", header: Array(header.utf8), size: 8 + header.utf8.count)
        let (message, seconds) = refusal(dir)
        print("[hostile] 200,000-entry header (\(header.utf8.count) bytes): \(seconds) s: \(message)")
        XCTAssertTrue(message.contains("more than"), message)
        XCTAssertLessThan(seconds, 2.0)
    }
}
