import Cortex
/// The binary request/response body of the serving engine (content type
/// `application/x-cortex-tensors`): named tensors, little-endian, no padding.
///
///     "CXTB"  u16 version (1)  u16 count (<= 16)
///     count × { u8 name length (1...64), name (UTF-8),
///               u8 dtype (1 int32, 2 int64, 3 float32, 4 uint8, 5 int16),
///               u8 rank (0...4), rank × i64 dims (>= 0), the elements }
///
/// The body must end exactly after the last tensor. The parser reads untrusted bytes:
/// every length is checked against what is left before anything is allocated, and a
/// malformed body is a `CortexError.parse` naming the byte offset, never a trap.
public struct TensorBody: Sendable {
    public enum DType: UInt8, Sendable {
        case int32 = 1, int64 = 2, float32 = 3, uint8 = 4, int16 = 5
        var size: Int { switch self { case .int32, .float32: 4; case .int64: 8; case .uint8: 1; case .int16: 2 } }
        var name: String { switch self { case .int32: "int32"; case .int64: "int64"; case .float32: "float32"; case .uint8: "uint8"; case .int16: "int16" } }
    }

    public struct Entry: Sendable {
        public let dtype: DType
        public let shape: [Int]
        /// The elements of an integer tensor (empty for float32).
        public let ints: [Int]
        /// The elements of a float32 tensor (empty otherwise).
        public let floats: [Float]
        public var count: Int { dtype == .float32 ? floats.count : ints.count }

        /// Integer elements (a float32 tensor is refused: ids are never rounded).
        public func integers(_ name: String) throws -> [Int] {
            guard dtype != .float32 else { throw CortexError.dtypeMismatch("\(name): float32 is not accepted (an integer dtype)") }
            return ints
        }
    }

    public static let contentType = "application/x-cortex-tensors"
    public static let maxTensors = 16

    /// Tensors in body order.
    public var tensors: [(String, Entry)]

    public init(_ tensors: [(String, Entry)]) { self.tensors = tensors }

    public subscript(name: String) -> Entry? { tensors.first { $0.0 == name }?.1 }

    public static func parse(_ bytes: [UInt8]) throws -> TensorBody {
        var r = Reader(bytes: bytes)
        guard try r.take(4) == Array("CXTB".utf8) else { throw r.fail("not a Cortex tensor body (magic 'CXTB')") }
        let version = try r.uint(2)
        guard version == 1 else { throw r.fail("unsupported version \(version) (this server reads 1)") }
        let count = try r.uint(2)
        guard count <= UInt64(maxTensors) else { throw r.fail("\(count) tensors; at most \(maxTensors)") }
        var out: [(String, Entry)] = []
        for _ in 0..<Int(count) {
            let nameLength = Int(try r.uint(1))
            guard (1...64).contains(nameLength) else { throw r.fail("tensor name length \(nameLength) is outside 1...64") }
            guard let name = String(validating: try r.take(nameLength), as: UTF8.self) else { throw r.fail("tensor name is not UTF-8") }
            guard !out.contains(where: { $0.0 == name }) else { throw r.fail("tensor '\(name)' appears twice") }
            let code = UInt8(try r.uint(1))
            guard let dtype = DType(rawValue: code) else { throw r.fail("'\(name)': unknown dtype code \(code)") }
            let rank = Int(try r.uint(1))
            guard rank <= 4 else { throw r.fail("'\(name)': rank \(rank) > 4") }
            var shape: [Int] = [], elements = 1
            for _ in 0..<rank {
                let d = try r.uint(8)
                guard d <= UInt64(r.remaining) else { throw r.fail("'\(name)': dimension \(d) is larger than the body") }
                shape.append(Int(d))
                let (m, overflow) = elements.multipliedReportingOverflow(by: Int(d))
                guard !overflow, m <= r.remaining else { throw r.fail("'\(name)': \(shape) elements do not fit in the body") }
                elements = m
            }
            guard elements * dtype.size <= r.remaining else {
                throw r.fail("'\(name)': \(elements) \(dtype.name) elements need \(elements * dtype.size) bytes, \(r.remaining) left")
            }
            var ints: [Int] = [], floats: [Float] = []
            if dtype == .float32 {
                floats = try (0..<elements).map { _ in Float(bitPattern: UInt32(truncatingIfNeeded: try r.uint(4))) }
            } else {
                ints = try (0..<elements).map { _ in
                    let u = try r.uint(dtype.size)
                    switch dtype {
                    case .int32: return Int(Int32(truncatingIfNeeded: u))
                    case .int16: return Int(Int16(truncatingIfNeeded: u))
                    case .uint8: return Int(u)
                    default: return Int(Int64(bitPattern: u))
                    }
                }
            }
            out.append((name, Entry(dtype: dtype, shape: shape, ints: ints, floats: floats)))
        }
        guard r.remaining == 0 else { throw r.fail("\(r.remaining) bytes after the last tensor") }
        return TensorBody(out)
    }

    /// Encode (float32 tensors as float32, integers as int64).
    public static func encode(_ tensors: [(String, shape: [Int], values: [Float])]) -> [UInt8] {
        var out = Array("CXTB".utf8)
        func put(_ v: UInt64, _ n: Int) { for i in 0..<n { out.append(UInt8(truncatingIfNeeded: v >> (8 * UInt64(i)))) } }
        put(1, 2)
        put(UInt64(tensors.count), 2)
        for (name, shape, values) in tensors {
            let n = Array(name.utf8)
            put(UInt64(n.count), 1)
            out += n
            put(UInt64(DType.float32.rawValue), 1)
            put(UInt64(shape.count), 1)
            for d in shape { put(UInt64(d), 8) }
            for v in values { put(UInt64(v.bitPattern), 4) }
        }
        return out
    }

    struct Reader {
        let bytes: [UInt8]
        var i = 0
        var remaining: Int { bytes.count - i }
        func fail(_ what: String) -> CortexError { .parse("tensor body, byte \(i): \(what)") }
        mutating func take(_ n: Int) throws -> [UInt8] {
            guard n <= remaining else { throw fail("truncated (\(n) bytes needed, \(remaining) left)") }
            defer { i += n }
            return Array(bytes[i..<(i + n)])
        }
        mutating func uint(_ n: Int) throws -> UInt64 {
            guard n <= remaining else { throw fail("truncated (\(n) bytes needed, \(remaining) left)") }
            var v: UInt64 = 0
            for k in 0..<n { v |= UInt64(bytes[i + k]) << (8 * UInt64(k)) }
            i += n
            return v
        }
    }
}
