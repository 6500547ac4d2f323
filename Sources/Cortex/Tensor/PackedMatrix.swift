import CKernels

/// A float32 weight `W [rows, cols]` (nn.Linear layout) held packed for
/// `cxk_packed_gemm`: panels of 16 rows, `P[rows/16][cols][16]`, zero-padded. Packed once
/// at load, so no product repacks it (OpenBLAS packs its operands on every call, which
/// cost a third of a small layer's product). The packed form is the only copy: a row
/// is read back with `copyRow` (an embedding lookup) and the whole matrix with
/// `unpacked()`.
///
/// Products are one FMA chain per output over `cols`, in order, for any row count and
/// thread split: a row's result never depends on the other rows of the call.
public struct PackedMatrix: @unchecked Sendable {
    public let rows: Int, cols: Int
    let buffer: FloatBuffer

    /// Weights held (rows · cols).
    public var count: Int { rows * cols }

    /// Pack a contiguous `[rows, cols]` tensor.
    public init(_ w: Tensor) throws {
        guard w.rank == 2, w.isContiguous else {
            throw CortexError.shapeMismatch("a packed weight needs a contiguous 2-D tensor, got shape \(w.shape)")
        }
        let (r, c) = (w.shape[0], w.shape[1])
        guard r <= Int(Int32.max) - 16, c <= Int(Int32.max) else {
            throw CortexError.invalidArgument("weight \(w.shape) is too large to pack")
        }
        rows = r
        cols = c
        buffer = try FloatBuffer(count: cxk_packed_size(Int32(r), Int32(c)), zeroed: false)
        if r > 0 && c > 0 { withExtendedLifetime(w) { cxk_pack_weights(w.data, Int32(r), Int32(c), buffer.pointer) } }
    }

    /// `y[i] (+)= x[i]·Wᵀ` for `m` rows of `x` (row stride `ldx`) into `y` (row stride
    /// `ldy`), split over Cortex's threads when large enough.
    @inline(__always)
    public func apply(m: Int, _ x: UnsafePointer<Float>, ldx: Int, into y: UnsafeMutablePointer<Float>, ldy: Int,
                      accumulate: Bool = false) {
        guard m > 0, rows > 0 else { return }
        cxk_parallel_packed_gemm(Int32(m), Int32(rows), Int32(cols), x, Int32(ldx), buffer.pointer, y, Int32(ldy),
                                accumulate ? 1 : 0)
    }

    /// Row `i` of W into `dst` (`cols` floats): lane `i % 16` of panel `i / 16`.
    public func copyRow(_ i: Int, into dst: UnsafeMutablePointer<Float>) {
        let src = buffer.pointer + (i / 16) * cols * 16 + i % 16
        for k in 0..<cols { dst[k] = src[k * 16] }
    }

    /// W as a contiguous `[rows, cols]` tensor (a copy).
    public func unpacked() throws -> Tensor {
        let t = try Tensor(zeros: [rows, cols])
        for i in 0..<rows { copyRow(i, into: t.data + i * cols) }
        return t
    }
}
