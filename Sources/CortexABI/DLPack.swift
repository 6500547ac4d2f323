#if canImport(Glibc)
import Glibc
#endif
import CCortex
import Cortex

/// Element types Cortex reads from DLPack. Floats convert to float32 (never
/// reinterpreted); the integer and bool kinds are accepted for reset masks only.
enum ElementKind: Equatable {
    case f32, f64, f16, bf16, bool, int(Int), uint(Int)

    init?(_ d: DLDataType) {
        guard d.lanes == 1 else { return nil }
        switch (d.code, d.bits) {
        case (2, 32): self = .f32
        case (2, 64): self = .f64
        case (2, 16): self = .f16
        case (4, 16): self = .bf16
        case (6, 8): self = .bool
        case (0, 8), (0, 16), (0, 32), (0, 64): self = .int(Int(d.bits) / 8)
        case (1, 8), (1, 16), (1, 32), (1, 64): self = .uint(Int(d.bits) / 8)
        default: return nil
        }
    }

    var isFloat: Bool { [.f32, .f64, .f16, .bf16].contains(self) }

    var size: Int {
        switch self {
        case .f32: return 4
        case .f64: return 8
        case .f16, .bf16: return 2
        case .bool: return 1
        case .int(let n), .uint(let n): return n
        }
    }

    var name: String {
        switch self {
        case .f32: return "float32"
        case .f64: return "float64"
        case .f16: return "float16"
        case .bf16: return "bfloat16"
        case .bool: return "bool"
        case .int(let n): return "int\(n * 8)"
        case .uint(let n): return "uint\(n * 8)"
        }
    }
}

func dtypeName(_ d: DLDataType) -> String {
    ElementKind(d)?.name ?? "dtype(code=\(d.code), bits=\(d.bits), lanes=\(d.lanes))"
}

func shapeText(_ s: [Int]) -> String { "(" + s.map(String.init).joined(separator: ", ") + ")" }

/// Up to 8 dimensions inline: validating a tensor must not allocate (step mode
/// promises zero heap allocations).
struct Dims: Equatable {
    var values: InlineArray<8, Int> = .init(repeating: 0)
    var count = 0

    init() {}
    init(_ a: [Int]) { for x in a { append(x) } }

    subscript(i: Int) -> Int {
        get { values[i] }
        set { values[i] = newValue }
    }

    mutating func append(_ x: Int) { values[count] = x; count += 1 }

    var array: [Int] { (0..<count).map { values[$0] } }

    static func == (a: Dims, b: Dims) -> Bool {
        guard a.count == b.count else { return false }
        for i in 0..<a.count where a[i] != b[i] { return false }
        return true
    }

    /// Row-major strides for these dims as a shape.
    var compactStrides: Dims {
        var s = Dims()
        s.count = count
        var acc = 1
        var i = count - 1
        while i >= 0 { s[i] = acc; acc &*= values[i]; i -= 1 }
        return s
    }
}

/// A validated, borrowed input tensor.
struct InputTensor {
    let name: StaticString
    let shape: Dims
    let kind: ElementKind
    let base: UnsafeRawPointer?  // data + byte_offset
    let strides: Dims            // in elements, always filled
    let count: Int

    /// Compact row-major (strides of size-1 dimensions do not matter).
    var isCompact: Bool {
        let c = shape.compactStrides
        for i in 0..<shape.count where shape[i] > 1 && strides[i] != c[i] { return false }
        return true
    }

    static let maxRank = 8

    /// Validate everything we can about `p` (rank, shape, device, dtype, strides).
    init(_ p: UnsafePointer<DLTensor>?, name: StaticString, maskAllowed: Bool = false) throws {
        guard let p else { throw CortexError.invalidArgument("\(name) is NULL") }
        let t = p.pointee
        self.name = name
        guard t.ndim >= 0, Int(t.ndim) <= InputTensor.maxRank else {
            throw CortexError.shapeMismatch("\(name): rank \(t.ndim) is outside [0, \(InputTensor.maxRank)]")
        }
        let rank = Int(t.ndim)
        guard rank == 0 || t.shape != nil else { throw CortexError.invalidArgument("\(name): shape is NULL") }
        var shape = Dims()
        for i in 0..<rank {
            let d = t.shape[i]
            guard d >= 0 else { throw CortexError.shapeMismatch("\(name): negative dimension \(d)") }
            shape.append(Int(d))
        }
        self.shape = shape
        guard t.device.device_type.rawValue == 1 else {
            throw CortexError.deviceMismatch("\(name): tensor is on device type \(t.device.device_type.rawValue), Cortex reads CPU tensors (kDLCPU) only")
        }
        guard let kind = ElementKind(t.dtype), kind.isFloat || maskAllowed else {
            let accepted = maskAllowed ? "float32/64/16, bfloat16, bool or integer" : "float32, float64, float16 or bfloat16"
            throw CortexError.dtypeMismatch("\(name): dtype \(dtypeName(t.dtype)) is not accepted (\(accepted))")
        }
        self.kind = kind
        var n = 1
        for i in 0..<rank { n = try Checked.mul(n, shape[i], "\(name) shape") }
        count = n
        _ = try Checked.mul(count, kind.size, "\(name) bytes")
        if let s = t.strides {
            var st = Dims()
            for i in 0..<rank { st.append(Int(s[i])) }
            strides = st
        } else {
            strides = shape.compactStrides
        }
        // The furthest element must be addressable without overflow.
        var extent = 0
        for i in 0..<rank where shape[i] > 0 {
            let span = try Checked.mul(shape[i] - 1, strides[i].magnitude > UInt(Int.max) ? Int.max : abs(strides[i]), "\(name) strides")
            extent = try Checked.add(extent, span, "\(name) strides")
        }
        _ = try Checked.mul(extent, kind.size, "\(name) strides")
        guard t.byte_offset <= UInt64(Int.max / 2) else { throw CortexError.invalidArgument("\(name): byte_offset is too large") }
        if count > 0 {
            guard let data = t.data else { throw CortexError.invalidArgument("\(name): data is NULL") }
            base = UnsafeRawPointer(data) + Int(t.byte_offset)
        } else {
            base = nil
        }
    }

    var description: String { "\(shapeText(shape.array)) \(kind.name)" }

    /// The float32 pointer itself when the data already is compact float32.
    var directFloats: UnsafePointer<Float>? {
        guard kind == .f32, isCompact, let base else { return nil }
        return base.assumingMemoryBound(to: Float.self)
    }

    /// Visit every element's byte offset in row-major order.
    @inline(__always)
    func forEachOffset(_ body: (Int, Int) -> Void) {
        guard count > 0 else { return }
        if isCompact {
            for i in 0..<count { body(i, i * kind.size) }
            return
        }
        var index = Dims()
        index.count = shape.count
        for i in 0..<count {
            var off = 0
            for d in 0..<shape.count { off += index[d] * strides[d] }
            body(i, off * kind.size)
            var d = shape.count - 1
            while d >= 0 {
                index[d] += 1
                if index[d] < shape[d] { break }
                index[d] = 0
                d -= 1
            }
        }
    }

    /// Convert to compact float32 in `dst` (count elements).
    func readFloats(into dst: UnsafeMutablePointer<Float>) {
        guard let base else { return }
        if let direct = directFloats { dst.update(from: direct, count: count); return }
        switch kind {
        case .f32: forEachOffset { i, o in dst[i] = base.loadUnaligned(fromByteOffset: o, as: Float.self) }
        case .f64: forEachOffset { i, o in dst[i] = Float(base.loadUnaligned(fromByteOffset: o, as: Double.self)) }
        case .f16: forEachOffset { i, o in dst[i] = Half.toFloat(base.loadUnaligned(fromByteOffset: o, as: UInt16.self)) }
        case .bf16: forEachOffset { i, o in dst[i] = Half.bf16ToFloat(base.loadUnaligned(fromByteOffset: o, as: UInt16.self)) }
        default: break  // unreachable: non-float inputs are refused at validation
        }
    }

    /// The elements of an integer tensor (int8…int64, uint8…uint64), or nil for any
    /// other dtype. uint64 values above Int.max come back as Int.max.
    func readIntegers() -> [Int]? {
        let k = kind
        switch k { case .int, .uint: break; default: return nil }
        var out = [Int](repeating: 0, count: count)
        guard let base else { return out }
        forEachOffset { i, o in
            switch k {
            case .int(1): out[i] = Int(base.load(fromByteOffset: o, as: Int8.self))
            case .uint(1): out[i] = Int(base.load(fromByteOffset: o, as: UInt8.self))
            case .int(2): out[i] = Int(base.loadUnaligned(fromByteOffset: o, as: Int16.self))
            case .uint(2): out[i] = Int(base.loadUnaligned(fromByteOffset: o, as: UInt16.self))
            case .int(4): out[i] = Int(base.loadUnaligned(fromByteOffset: o, as: Int32.self))
            case .uint(4): out[i] = Int(base.loadUnaligned(fromByteOffset: o, as: UInt32.self))
            case .int(8): out[i] = Int(base.loadUnaligned(fromByteOffset: o, as: Int64.self))
            default: out[i] = Int(clamping: base.loadUnaligned(fromByteOffset: o, as: UInt64.self))
            }
        }
        return out
    }

    /// Convert to a 0/1 mask in `dst` (count bytes): any non-zero element is 1.
    func readMask(into dst: UnsafeMutablePointer<UInt8>) {
        guard let base else { return }
        let k = kind
        forEachOffset { i, o in
            let nonzero: Bool
            switch k {
            case .f32: nonzero = base.loadUnaligned(fromByteOffset: o, as: Float.self) != 0
            case .f64: nonzero = base.loadUnaligned(fromByteOffset: o, as: Double.self) != 0
            case .f16, .bf16: nonzero = base.loadUnaligned(fromByteOffset: o, as: UInt16.self) & 0x7FFF != 0
            case .bool, .int(1), .uint(1): nonzero = base.load(fromByteOffset: o, as: UInt8.self) != 0
            case .int(2), .uint(2): nonzero = base.loadUnaligned(fromByteOffset: o, as: UInt16.self) != 0
            case .int(4), .uint(4): nonzero = base.loadUnaligned(fromByteOffset: o, as: UInt32.self) != 0
            default: nonzero = base.loadUnaligned(fromByteOffset: o, as: UInt64.self) != 0
            }
            dst[i] = nonzero ? 1 : 0
        }
    }
}

/// A validated, writable float32 output tensor provided by the caller.
struct OutputTensor {
    let shape: Dims
    let strides: Dims
    let base: UnsafeMutableRawPointer?

    init(_ p: UnsafeMutablePointer<DLTensor>?, name: StaticString, expected: Dims) throws {
        let view = try InputTensor(UnsafePointer(p), name: name)
        guard view.kind == .f32 else {
            throw CortexError.dtypeMismatch("\(name): expected float32 output, got \(view.kind.name)")
        }
        guard view.shape == expected else {
            throw CortexError.shapeMismatch("\(name): expected \(shapeText(expected.array)) float32, got \(view.description)")
        }
        shape = view.shape
        strides = view.strides
        base = view.base.map { UnsafeMutableRawPointer(mutating: $0) }
    }

    func write(from src: UnsafePointer<Float>, count: Int) {
        guard let base, count > 0 else { return }
        if strides == shape.compactStrides {
            base.assumingMemoryBound(to: Float.self).update(from: src, count: count)
            return
        }
        var index = Dims()
        index.count = shape.count
        for i in 0..<count {
            var off = 0
            for d in 0..<shape.count { off += index[d] * strides[d] }
            base.storeBytes(of: src[i], toByteOffset: off * 4, as: Float.self)
            var d = shape.count - 1
            while d >= 0 {
                index[d] += 1
                if index[d] < shape[d] { break }
                index[d] = 0
                d -= 1
            }
        }
    }
}
