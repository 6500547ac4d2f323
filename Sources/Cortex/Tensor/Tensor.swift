/// A float32 tensor: a shape and strides (in elements) over one shared `FloatBuffer`.
/// Cortex computes on contiguous row-major tensors; strided views only come from
/// the outside world and are made contiguous at the boundary.
public struct Tensor: @unchecked Sendable, CustomStringConvertible {
    public let shape: [Int]
    public let strides: [Int]
    public let offset: Int
    public let buffer: FloatBuffer

    /// A zero tensor of `shape`, contiguous.
    public init(zeros shape: [Int]) throws {
        let n = try Checked.count(shape, "tensor shape \(shape)")
        self.buffer = try FloatBuffer(count: n)
        self.shape = shape
        self.strides = Tensor.contiguousStrides(shape)
        self.offset = 0
    }

    /// A contiguous tensor holding `values` (count must match the shape).
    public init(shape: [Int], values: [Float]) throws {
        let n = try Checked.count(shape, "tensor shape \(shape)")
        guard n == values.count else {
            throw CortexError.shapeMismatch("shape \(shape) needs \(n) values, got \(values.count)")
        }
        try self.init(zeros: shape)
        values.withUnsafeBufferPointer { src in
            if let base = src.baseAddress { buffer.pointer.update(from: base, count: n) }
        }
    }

    /// A view on an existing buffer (no copy).
    public init(buffer: FloatBuffer, shape: [Int], strides: [Int]? = nil, offset: Int = 0) {
        self.buffer = buffer
        self.shape = shape
        self.strides = strides ?? Tensor.contiguousStrides(shape)
        self.offset = offset
    }

    public static func contiguousStrides(_ shape: [Int]) -> [Int] {
        var strides = [Int](repeating: 1, count: shape.count)
        var acc = 1
        for i in stride(from: shape.count - 1, through: 0, by: -1) {
            strides[i] = acc
            acc &*= shape[i]
        }
        return strides
    }

    public var rank: Int { shape.count }
    public var count: Int { shape.reduce(1, *) }
    public var isContiguous: Bool { strides == Tensor.contiguousStrides(shape) }

    /// Pointer to the first element. Only meaningful as a flat array when contiguous.
    public var data: UnsafeMutablePointer<Float> { buffer.pointer + offset }

    /// A contiguous copy (or `self` when already contiguous).
    public func contiguous() throws -> Tensor {
        if isContiguous { return self }
        let out = try Tensor(zeros: shape)
        var index = [Int](repeating: 0, count: rank)
        let src = data
        let dst = out.data
        for i in 0..<count {
            var off = 0
            for d in 0..<rank { off += index[d] * strides[d] }
            dst[i] = src[off]
            var d = rank - 1
            while d >= 0 {
                index[d] += 1
                if index[d] < shape[d] { break }
                index[d] = 0
                d -= 1
            }
        }
        return out
    }

    /// The same elements under a new shape (contiguous tensors only).
    public func reshaped(_ newShape: [Int]) throws -> Tensor {
        let n = try Checked.count(newShape, "reshape \(newShape)")
        guard n == count else { throw CortexError.shapeMismatch("cannot reshape \(shape) to \(newShape)") }
        let base = try contiguous()
        return Tensor(buffer: base.buffer, shape: newShape, offset: base.offset)
    }

    /// A deep, contiguous copy.
    public func copy() throws -> Tensor {
        let src = try contiguous()
        let out = try Tensor(zeros: shape)
        out.data.update(from: src.data, count: count)
        return out
    }

    /// Elements in row-major order.
    public func toArray() -> [Float] {
        guard let c = try? contiguous() else { return [] }
        return Array(UnsafeBufferPointer(start: c.data, count: c.count))
    }

    public var description: String { "Tensor(shape: \(shape))" }
}
