#if canImport(Glibc)
import Glibc
#endif

/// The safetensors format (https://github.com/huggingface/safetensors): an 8-byte
/// little-endian header length N, N bytes of UTF-8 JSON describing each tensor
/// (`dtype`, `shape`, `data_offsets` relative to the data section), then the data.
///
/// The reader trusts nothing: header length ≤ 100 MB and within the file, strict JSON,
/// known dtypes, non-negative shapes whose byte size matches the offsets, offsets
/// in bounds, non-overlapping and covering the data section exactly — all with
/// overflow-checked arithmetic. Floating tensors (F32, F16, BF16, F64) load as F32.
public struct SafetensorsFile: Sendable {
    public enum DType: String, Sendable {
        case f64 = "F64", f32 = "F32", f16 = "F16", bf16 = "BF16"
        case i64 = "I64", i32 = "I32", i16 = "I16", i8 = "I8"
        case u64 = "U64", u32 = "U32", u16 = "U16", u8 = "U8", bool = "BOOL"
        /// complex64 (open-mythos' RoPE buffers): parsed so such files load, never read.
        case c64 = "C64"

        public var size: Int {
            switch self {
            case .f64, .i64, .u64, .c64: return 8
            case .f32, .i32, .u32: return 4
            case .f16, .bf16, .i16, .u16: return 2
            case .i8, .u8, .bool: return 1
            }
        }
    }

    public struct Entry: Sendable {
        public let name: String
        public let dtype: DType
        public let shape: [Int]
        public let begin: Int  // absolute byte offsets in `bytes`
        public let end: Int
    }

    public static let maxHeaderBytes = 100_000_000
    /// Tensors per file at most. A header is scanned for this before it is parsed, so a
    /// header of millions of tiny entries costs milliseconds, not gigabytes of JSON.
    public static let maxTensors = 1 << 17
    /// Header bytes a file may have: a base for `__metadata__` plus a generous 512 bytes
    /// per tensor (a real entry is about 100-200 bytes), so the parsed header stays
    /// proportional to the tensors the file declares, not to whatever it pads in.
    public static let headerBaseBytes = 64 << 10, headerBytesPerTensor = 512

    /// The file's bytes: in memory, or the open file (`init(path:)`).
    let storage: ByteStore
    public let entries: [String: Entry]
    /// Tensor names in data order.
    public let names: [String]
    public let metadata: [String: String]
    /// Refuse float tensors holding NaN or ±infinity (the `check_weights` load option).
    public var requireFinite = false

    /// Load a file: the 8-byte length and the header are read and validated against the
    /// file's size first (a bad header in a huge file is refused in milliseconds, reading
    /// nothing else); the data stays in the file, read tensor by tensor when asked for.
    /// Pipes and devices are refused without blocking.
    public init(path: String) throws {
        let (fd, size) = try FileIO.openRegular(path)
        var closeOnExit = true  // until the storage owns it
        defer { if closeOnExit { close(fd) } }
        guard size >= 8 else {
            throw CortexError.parse("safetensors: file is \(size) bytes, shorter than the 8-byte header length")
        }
        let prefix = try FileIO.read(fd, path, offset: 0, count: 8)
        let headerLen = try Self.headerLength(prefix, fileSize: size)
        let header = try FileIO.read(fd, path, offset: 8, count: headerLen)
        (entries, names, metadata) = try Self.parseHeader(header, fileSize: size, budgeted: true)
        storage = ByteStore(file: fd, path)
        closeOnExit = false
    }

    public init(bytes: [UInt8]) throws {
        guard bytes.count >= 8 else {
            throw CortexError.parse("safetensors: file is \(bytes.count) bytes, shorter than the 8-byte header length")
        }
        let headerLen = try Self.headerLength(Array(bytes[0..<8]), fileSize: bytes.count)
        (entries, names, metadata) = try Self.parseHeader(Array(bytes[8..<(8 + headerLen)]), fileSize: bytes.count)
        storage = ByteStore(bytes)
    }

    /// The header's length from the first 8 bytes, checked against the limit and the file.
    static func headerLength(_ prefix: [UInt8], fileSize: Int) throws -> Int {
        var n: UInt64 = 0
        for k in 0..<8 { n |= UInt64(prefix[k]) << (8 * UInt64(k)) }
        guard n <= UInt64(SafetensorsFile.maxHeaderBytes) else {
            throw CortexError.parse("safetensors: header length \(n) exceeds the 100 MB limit")
        }
        let headerLen = Int(n)
        guard 8 + headerLen <= fileSize else {
            throw CortexError.parse("safetensors: header length \(headerLen) runs past the end of the file (\(fileSize) bytes)")
        }
        return headerLen
    }

    /// Every entry of `header` checked against a file of `fileSize` bytes: known dtypes,
    /// sizes that match the offsets, offsets that tile the data section exactly.
    /// `budgeted`: a file's header must also fit the per-tensor budget (bytes already in
    /// memory, such as state and session blobs, are not held to it).
    static func parseHeader(_ headerBytes: [UInt8], fileSize: Int, budgeted: Bool = false) throws
        -> (entries: [String: Entry], names: [String], metadata: [String: String]) {
        // Count entries before building any JSON (memchr/memcmp: a 100 MB header is
        // scanned in milliseconds).
        let marker = Array("data_offsets".utf8)
        var found = 0
        try headerBytes.withUnsafeBytes { raw in
            guard let base = raw.baseAddress else { return }
            var i = 0
            while i + marker.count <= raw.count, let hit = memchr(base + i, Int32(marker[0]), raw.count - i) {
                let at = base.distance(to: UnsafeRawPointer(hit))
                guard at + marker.count <= raw.count else { break }
                if memcmp(hit, marker, marker.count) == 0 {
                    found += 1
                    guard found <= maxTensors else {
                        throw CortexError.parse("safetensors: more than \(maxTensors) tensors in the header")
                    }
                    i = at + marker.count
                } else {
                    i = at + 1
                }
            }
        }
        let headerLen = headerBytes.count
        let budget = headerBaseBytes + headerBytesPerTensor * found
        guard !budgeted || headerLen <= budget else {
            throw CortexError.parse("safetensors: the header is \(headerLen) bytes for \(found) tensors (at most \(headerBaseBytes) + "
                                    + "\(headerBytesPerTensor) per tensor = \(budget))")
        }
        let header: JSON
        do { header = try JSON.parse(headerBytes) } catch let e as CortexError {
            throw CortexError.parse("safetensors header: \(e.message)")
        }
        guard let pairs = header.objectPairs else { throw CortexError.parse("safetensors: header is not a JSON object") }

        let dataStart = 8 + headerLen
        let dataLen = fileSize - dataStart
        var entries: [String: Entry] = [:]
        var metadata: [String: String] = [:]
        var spans: [(Int, Int, String)] = []
        for (name, desc) in pairs {
            if name == "__metadata__" {
                guard let m = desc.objectPairs else { throw CortexError.parse("safetensors: __metadata__ is not an object") }
                for (k, v) in m {
                    guard let s = v.string else { throw CortexError.parse("safetensors: __metadata__[\(k)] is not a string") }
                    metadata[k] = s
                }
                continue
            }
            guard let dtypeName = desc["dtype"]?.string else { throw CortexError.parse("safetensors: tensor '\(name)' has no dtype") }
            guard let dtype = DType(rawValue: dtypeName) else {
                throw CortexError.parse("safetensors: tensor '\(name)' has unknown dtype '\(dtypeName)'")
            }
            guard let shapeJSON = desc["shape"]?.array else { throw CortexError.parse("safetensors: tensor '\(name)' has no shape") }
            var shape: [Int] = []
            for d in shapeJSON {
                guard let v = d.int, v >= 0 else { throw CortexError.parse("safetensors: tensor '\(name)' has an invalid dimension") }
                shape.append(v)
            }
            guard let offs = desc["data_offsets"]?.array, offs.count == 2,
                  let b = offs[0].int, let e = offs[1].int, b >= 0, e >= b else {
                throw CortexError.parse("safetensors: tensor '\(name)' has invalid data_offsets")
            }
            let count: Int
            let nbytes: Int
            do {
                count = try Checked.count(shape, "tensor '\(name)'")
                nbytes = try Checked.mul(count, dtype.size, "tensor '\(name)'")
            } catch let err as CortexError { throw CortexError.parse("safetensors: \(err.message)") }
            guard nbytes == e - b else {
                throw CortexError.parse("safetensors: tensor '\(name)' shape \(shape) \(dtypeName) needs \(nbytes) bytes but data_offsets span \(e - b)")
            }
            guard e <= dataLen else {
                throw CortexError.parse("safetensors: tensor '\(name)' data_offsets [\(b), \(e)] run past the data section (\(dataLen) bytes)")
            }
            entries[name] = Entry(name: name, dtype: dtype, shape: shape, begin: dataStart + b, end: dataStart + e)
            spans.append((b, e, name))
        }
        // Offsets must tile the data section: sorted, touching, no overlap, no gap.
        spans.sort { $0.0 < $1.0 || ($0.0 == $1.0 && $0.1 < $1.1) }
        var cursor = 0
        for (b, e, name) in spans {
            if b < cursor { throw CortexError.parse("safetensors: tensor '\(name)' overlaps the previous tensor") }
            if b > cursor { throw CortexError.parse("safetensors: gap in the data section before tensor '\(name)'") }
            cursor = e
        }
        guard cursor == dataLen else {
            throw CortexError.parse("safetensors: data section is \(dataLen) bytes but tensors cover \(cursor)")
        }
        return (entries, spans.map { $0.2 }, metadata)
    }

    public func contains(_ name: String) -> Bool { entries[name] != nil }

    /// Tensor `name` as float32 (converted from F16/BF16/F64).
    public func tensor(_ name: String) throws -> Tensor {
        guard let e = entries[name] else { throw CortexError.missingTensor("tensor '\(name)' is missing") }
        let out = try Tensor(zeros: e.shape)
        let n = out.count
        let dst = out.data
        try storage.withBytes(e.begin..<e.end) { raw in
            guard let base = raw.baseAddress else { return }
            let src = base
            switch e.dtype {
            case .f32:
                for i in 0..<n { dst[i] = Float(bitPattern: UInt32(littleEndian: src.loadUnaligned(fromByteOffset: 4 * i, as: UInt32.self))) }
            case .f64:
                for i in 0..<n { dst[i] = Float(Double(bitPattern: UInt64(littleEndian: src.loadUnaligned(fromByteOffset: 8 * i, as: UInt64.self)))) }
            case .f16:
                for i in 0..<n { dst[i] = Half.toFloat(UInt16(littleEndian: src.loadUnaligned(fromByteOffset: 2 * i, as: UInt16.self))) }
            case .bf16:
                for i in 0..<n { dst[i] = Half.bf16ToFloat(UInt16(littleEndian: src.loadUnaligned(fromByteOffset: 2 * i, as: UInt16.self))) }
            default:
                throw CortexError.dtypeMismatch("tensor '\(name)' is \(e.dtype.rawValue); only F32, F16, BF16 and F64 load as weights")
            }
        }
        if requireFinite, let i = (0..<n).first(where: { !dst[$0].isFinite }) {
            throw CortexError.parse("tensor '\(name)' holds \(dst[i]) at flat index \(i); non-finite values are refused here")
        }
        return out
    }

    /// Tensor `name` as stored INT8 values (a saved INT8 weight); must be I8 of `shape`.
    public func int8(_ name: String, shape: [Int]) throws -> [Int8] {
        guard let e = entries[name] else { throw CortexError.missingTensor("tensor '\(name)' is missing") }
        guard e.shape == shape else {
            throw CortexError.missingTensor("tensor '\(name)' has shape \(e.shape), expected \(shape)")
        }
        guard e.dtype == .i8 else { throw CortexError.dtypeMismatch("tensor '\(name)' is \(e.dtype.rawValue); INT8 weights are I8") }
        return try storage.withBytes(e.begin..<e.end) { raw in
            Array(raw.bindMemory(to: Int8.self))
        }
    }

    /// Tensor `name` as integers (index buffers such as an SRHT permutation): integer
    /// dtypes as stored, floating dtypes only when every value is integral (Cortex's own
    /// exporter writes every buffer as F32).
    public func integers(_ name: String, shape: [Int]) throws -> [Int] {
        guard let e = entries[name] else { throw CortexError.missingTensor("tensor '\(name)' is missing") }
        guard e.shape == shape else {
            throw CortexError.missingTensor("tensor '\(name)' has shape \(e.shape), expected \(shape)")
        }
        let n = try Checked.count(shape, "tensor '\(name)'")
        switch e.dtype {
        case .f32, .f64, .f16, .bf16:
            let t = try tensor(name)
            var out = [Int](repeating: 0, count: n)
            for i in 0..<n {
                let v = t.data[i]
                guard v.rounded() == v, abs(v) < 16_777_216 else {
                    throw CortexError.dtypeMismatch("tensor '\(name)' holds a non-integer value \(v) at index \(i)")
                }
                out[i] = Int(v)
            }
            return out
        case .i64, .u64, .i32, .u32, .i16, .u16, .i8, .u8:
            return try storage.withBytes(e.begin..<e.end) { raw -> [Int] in
                guard let base = raw.baseAddress else { return [] }
                let src = base
                var out = [Int](repeating: 0, count: n)
                for i in 0..<n {
                    switch e.dtype {
                    case .i64:
                        let v = Int64(littleEndian: src.loadUnaligned(fromByteOffset: 8 * i, as: Int64.self))
                        out[i] = Int(v)
                    case .u64:
                        let v = UInt64(littleEndian: src.loadUnaligned(fromByteOffset: 8 * i, as: UInt64.self))
                        guard v <= UInt64(Int.max) else {
                            throw CortexError.dtypeMismatch("tensor '\(name)' value \(v) at index \(i) does not fit an Int")
                        }
                        out[i] = Int(v)
                    case .i32: out[i] = Int(Int32(littleEndian: src.loadUnaligned(fromByteOffset: 4 * i, as: Int32.self)))
                    case .u32: out[i] = Int(UInt32(littleEndian: src.loadUnaligned(fromByteOffset: 4 * i, as: UInt32.self)))
                    case .i16: out[i] = Int(Int16(littleEndian: src.loadUnaligned(fromByteOffset: 2 * i, as: Int16.self)))
                    case .u16: out[i] = Int(UInt16(littleEndian: src.loadUnaligned(fromByteOffset: 2 * i, as: UInt16.self)))
                    case .i8: out[i] = Int(src.load(fromByteOffset: i, as: Int8.self))
                    default: out[i] = Int(src.load(fromByteOffset: i, as: UInt8.self))
                    }
                }
                return out
            }
        case .bool, .c64:
            throw CortexError.dtypeMismatch("tensor '\(name)' is \(e.dtype.rawValue); expected integers")
        }
    }

    /// Tensor `name`, required to have exactly `shape`.
    public func tensor(_ name: String, shape: [Int]) throws -> Tensor {
        guard let e = entries[name] else { throw CortexError.missingTensor("tensor '\(name)' is missing") }
        guard e.shape == shape else {
            throw CortexError.missingTensor("tensor '\(name)' has shape \(e.shape), expected \(shape)")
        }
        return try tensor(name)
    }

    /// Serialise float32 tensors (in the given order) with optional metadata.
    public static func write(_ tensors: [(String, Tensor)], metadata: [String: String] = [:]) throws -> [UInt8] {
        var pairs: [(String, JSON)] = []
        if !metadata.isEmpty {
            pairs.append(("__metadata__", .object(metadata.sorted { $0.key < $1.key }.map { ($0.key, .string($0.value)) })))
        }
        var offset = 0
        for (name, t) in tensors {
            let nbytes = try Checked.mul(t.count, 4, "tensor '\(name)'")
            pairs.append((name, .object([
                ("dtype", .string("F32")),
                ("shape", .array(t.shape.map { .number(Double($0)) })),
                ("data_offsets", .array([.number(Double(offset)), .number(Double(offset + nbytes))])),
            ])))
            offset = try Checked.add(offset, nbytes, "safetensors data")
        }
        var header = Array(JSON.object(pairs).serialized.utf8)
        while header.count % 8 != 0 { header.append(0x20) }
        var out: [UInt8] = []
        out.reserveCapacity(8 + header.count + offset)
        let n = UInt64(header.count)
        for k in 0..<8 { out.append(UInt8(truncatingIfNeeded: n >> (8 * UInt64(k)))) }
        out.append(contentsOf: header)
        for (_, t) in tensors {
            let c = try t.contiguous()
            for i in 0..<c.count {
                let bits = c.data[i].bitPattern
                out.append(UInt8(truncatingIfNeeded: bits))
                out.append(UInt8(truncatingIfNeeded: bits >> 8))
                out.append(UInt8(truncatingIfNeeded: bits >> 16))
                out.append(UInt8(truncatingIfNeeded: bits >> 24))
            }
        }
        return out
    }
}

/// IEEE half and bfloat16 conversions (exact; no platform Float16 needed).
public enum Half {
    public static func toFloat(_ h: UInt16) -> Float {
        let sign = UInt32(h & 0x8000) << 16
        let exp = UInt32(h >> 10) & 0x1F
        let man = UInt32(h & 0x3FF)
        if exp == 0 {
            if man == 0 { return Float(bitPattern: sign) }
            // Subnormal: value = man · 2^-24.
            let v = Float(man) * (1.0 / 16_777_216.0)
            return sign != 0 ? -v : v
        }
        if exp == 31 { return Float(bitPattern: sign | 0x7F80_0000 | (man << 13)) }
        return Float(bitPattern: sign | ((exp + 112) << 23) | (man << 13))
    }

    public static func bf16ToFloat(_ h: UInt16) -> Float { Float(bitPattern: UInt32(h) << 16) }
}

/// The bytes behind a `SafetensorsFile`: an array, or an open file read by ranges (each
/// tensor copied or converted when asked for, so loading never holds the whole file, and
/// a file truncated under the reader gives a short-read error, where a mapping would
/// raise SIGBUS in the host).
final class ByteStore: @unchecked Sendable {
    private let array: [UInt8]
    private let fd: Int32
    private let path: String

    init(_ bytes: [UInt8]) {
        array = bytes
        fd = -1
        path = ""
    }

    /// Takes ownership of `fd` (closed when the last reference goes).
    init(file fd: Int32, _ path: String) {
        array = []
        self.fd = fd
        self.path = path
    }

    deinit {
        if fd >= 0 { close(fd) }
    }

    /// `body` over the bytes in `range` (absolute offsets, already checked against the size).
    func withBytes<R>(_ range: Range<Int>, _ body: (UnsafeRawBufferPointer) throws -> R) throws -> R {
        if fd < 0 { return try array.withUnsafeBytes { try body(UnsafeRawBufferPointer(rebasing: $0[range])) } }
        let bytes = try FileIO.read(fd, path, offset: range.lowerBound, count: range.count)
        return try bytes.withUnsafeBytes(body)
    }
}
