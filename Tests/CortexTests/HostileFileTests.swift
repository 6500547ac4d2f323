import Cortex
import XCTest

#if canImport(Glibc)
import Glibc
#endif

/// Files that must be refused quickly, without reading or allocating what they claim:
/// a 30 GB sparse weights file, a named pipe, a header of a million entries (each a
/// model folder with a valid config, loaded through `Model.load`); and values that must
/// be refused when asked: NaN weights, a re-sealed NaN state.
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
        var header: [UInt8] = [UInt8(ascii: "{")]
        header.reserveCapacity(60_000_000)
        for i in 0..<1_000_000 {
            header += Array(((i > 0 ? "," : "") + #""t\#(i)":{"dtype":"F32","shape":[0],"data_offsets":[0,0]}"#).utf8)
        }
        header.append(UInt8(ascii: "}"))
        sparseFile(dir + "/model.safetensors", header: header, size: 8 + header.count)
        let (message, seconds) = refusal(dir)
        print("[hostile] 1,000,000-entry header (\(header.count) bytes): \(seconds) s: \(message)")
        XCTAssertTrue(message.contains("more than"), message)
        XCTAssertLessThan(seconds, 2.0)
    }

    /// `checkWeights` refuses a weight holding NaN, naming the tensor; without it the
    /// file loads as before (NaN is a value PyTorch would compute with too).
    func testCheckWeightsRefusesNonFiniteWeights() throws {
        let dir = repoRoot + "/Tests/goldens/lstm_stack/model"
        let config = try FileIO.read(dir + "/config.json")
        let file = try SafetensorsFile(bytes: try FileIO.read(dir + "/model.safetensors"))
        let poisoned = file.names.last!
        let tensors = try file.names.map { name -> (String, Tensor) in
            let t = try file.tensor(name)
            if name == poisoned { t.data[t.count - 1] = .nan }
            return (name, t)
        }
        let bytes = try SafetensorsFile.write(tensors)
        XCTAssertNoThrow(try Model(configBytes: config, weightBytes: bytes))
        XCTAssertThrowsError(try Model(configBytes: config, weightBytes: bytes, checkWeights: true)) { e in
            let m = (e as? CortexError)?.message ?? "\(e)"
            print("[hostile] NaN weight: \(m)")
            XCTAssertTrue(m.contains("tensor '\(poisoned)' holds nan"), m)
        }
        XCTAssertNoThrow(try Model.load(directory: dir, checkWeights: true))
    }

    /// A state blob holding NaN, sealed with a valid checksum (anyone can compute the
    /// unkeyed checksum), is refused by a model loaded with the reject policy.
    func testResealedNaNStateIsRefusedUnderReject() throws {
        let dir = repoRoot + "/Tests/goldens/lstm_stack/model"
        let lenient = try Model.load(directory: dir), strict = try Model.load(directory: dir, nanPolicy: .reject)
        let state = try lenient.makeState(batch: 2)
        state.tensors[0].data[1] = .nan
        let blob = try StateCodec.encode(state)
        XCTAssertNoThrow(try StateCodec.decode(blob, model: lenient))
        XCTAssertThrowsError(try StateCodec.decode(blob, model: strict)) { e in
            let m = (e as? CortexError)?.message ?? "\(e)"
            print("[hostile] NaN state under reject: \(m)")
            XCTAssertTrue(m.contains("holds nan at flat index 1"), m)
        }
        state.tensors[0].data[1] = 0
        XCTAssertNoThrow(try StateCodec.decode(try StateCodec.encode(state), model: strict))
    }

    /// A header padded far beyond its entries (95 MB of metadata for one tensor) is
    /// refused before it is parsed: the parse would cost a few times the header.
    func testPaddedHeaderIsRefusedBeforeParsing() throws {
        let dir = try folder("padded")
        defer { unlink(dir + "/model.safetensors"); unlink(dir + "/config.json"); rmdir(dir) }
        let filler = String(repeating: "x", count: 95_000_000)
        let header = Array((#"{"__metadata__":{"pad":""# + filler + #""},"t":{"dtype":"F32","shape":[0],"data_offsets":[0,0]}}"#).utf8)
        sparseFile(dir + "/model.safetensors", header: header, size: 8 + header.count)
        let (message, seconds) = refusal(dir)
        print("[hostile] 95 MB header for 1 tensor: \(seconds) s: \(message)")
        XCTAssertTrue(message.contains("per tensor"), message)
        XCTAssertLessThan(seconds, 2.0)
    }
}
