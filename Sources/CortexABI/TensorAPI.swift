#if canImport(Glibc)
import Glibc
#endif
import CCortex
import Cortex

/// A producer's managed DLPack tensor that Cortex took ownership of; its deleter
/// runs exactly once, when the last reference (handle or re-export) goes away.
final class ForeignTensor: @unchecked Sendable {
    enum Managed {
        case versioned(UnsafeMutablePointer<DLManagedTensorVersioned>)
        case legacy(UnsafeMutablePointer<DLManagedTensor>)
    }

    let managed: Managed

    init(_ managed: Managed) { self.managed = managed }

    var view: UnsafeMutablePointer<DLTensor> {
        switch managed {
        case .versioned(let m): return UnsafeMutableRawPointer(m).advanced(by: MemoryLayout<DLManagedTensorVersioned>.offset(of: \.dl_tensor) ?? 0).assumingMemoryBound(to: DLTensor.self)
        case .legacy(let m): return UnsafeMutableRawPointer(m).assumingMemoryBound(to: DLTensor.self)
        }
    }

    var readOnly: Bool {
        if case .versioned(let m) = managed { return m.pointee.flags & UInt64(DLPACK_FLAG_BITMASK_READ_ONLY) != 0 }
        return false
    }

    deinit {
        switch managed {
        case .versioned(let m): m.pointee.deleter?(m)
        case .legacy(let m): m.pointee.deleter?(m)
        }
    }
}

/// What a `cx_tensor_t` points at: a DLTensor view plus the object owning its memory
/// (a FloatBuffer for Cortex outputs, a ForeignTensor for imports).
/// A Tensor as a caller-owned output handle (shares its buffer).
func publishTensor(_ t: Tensor) -> OpaquePointer { publish(TensorHandle(buffer: t.buffer, shape: t.shape), .tensor) }

final class TensorHandle: @unchecked Sendable {
    let view: UnsafeMutablePointer<DLTensor>
    let owner: AnyObject
    let readOnly: Bool
    private let ownsView: Bool

    /// A Cortex output: compact float32 over `buffer`.
    init(buffer: FloatBuffer, shape: [Int]) {
        let rank = shape.count
        let raw = UnsafeMutableRawPointer.allocate(
            byteCount: MemoryLayout<DLTensor>.stride + max(rank, 1) * 8, alignment: 16)
        let dims = (raw + MemoryLayout<DLTensor>.stride).bindMemory(to: Int64.self, capacity: max(rank, 1))
        for i in 0..<rank { dims[i] = Int64(shape[i]) }
        view = raw.bindMemory(to: DLTensor.self, capacity: 1)
        view.initialize(to: DLTensor(
            data: UnsafeMutableRawPointer(buffer.pointer), device: DLDevice(device_type: kDLCPU, device_id: 0),
            ndim: Int32(rank), dtype: DLDataType(code: 2, bits: 32, lanes: 1),
            shape: dims, strides: nil, byte_offset: 0))
        owner = buffer
        readOnly = false
        ownsView = true
    }

    /// An import: the producer's own DLTensor, kept alive by `foreign`.
    init(foreign: ForeignTensor) {
        view = foreign.view
        owner = foreign
        readOnly = foreign.readOnly
        ownsView = false
    }

    deinit { if ownsView { UnsafeMutableRawPointer(view).deallocate() } }
}

// MARK: export

/// One allocation per export: the managed struct, then shape, then strides.
private func exportBlock<M>(_ type: M.Type, rank: Int) -> (UnsafeMutableRawPointer, UnsafeMutablePointer<Int64>, UnsafeMutablePointer<Int64>)? {
    let head = (MemoryLayout<M>.stride + 7) & ~7
    guard let raw = malloc(head + 2 * max(rank, 1) * 8) else { return nil }
    let dims = (raw + head).bindMemory(to: Int64.self, capacity: 2 * max(rank, 1))
    return (raw, dims, dims + max(rank, 1))
}

private func fillExport(_ src: DLTensor, shape: UnsafeMutablePointer<Int64>, strides: UnsafeMutablePointer<Int64>) -> DLTensor {
    let rank = Int(src.ndim)
    var acc: Int64 = 1
    for i in stride(from: rank - 1, through: 0, by: -1) {
        shape[i] = src.shape[i]
        strides[i] = src.strides?[i] ?? acc
        acc = acc &* src.shape[i]
    }
    return DLTensor(data: src.data, device: src.device, ndim: src.ndim, dtype: src.dtype,
                    shape: shape, strides: strides, byte_offset: src.byte_offset)
}

private let versionedDeleter: @convention(c) (UnsafeMutablePointer<DLManagedTensorVersioned>?) -> Void = { m in
    guard let m else { return }
    if let ctx = m.pointee.manager_ctx { Unmanaged<AnyObject>.fromOpaque(ctx).release() }
    free(m)
}

private let legacyDeleter: @convention(c) (UnsafeMutablePointer<DLManagedTensor>?) -> Void = { m in
    guard let m else { return }
    if let ctx = m.pointee.manager_ctx { Unmanaged<AnyObject>.fromOpaque(ctx).release() }
    free(m)
}

@_cdecl("cx_tensor_to_dlpack")
public func cx_tensor_to_dlpack(_ t: OpaquePointer?, _ out: UnsafeMutablePointer<UnsafeMutablePointer<DLManagedTensorVersioned>?>?) -> Int32 {
    entry("cx_tensor_to_dlpack") {
        let h = try resolve(t, .tensor, "tensor", as: TensorHandle.self)
        let out = try requireOut(out, "out")
        let src = h.view.pointee
        guard let (raw, shape, strides) = exportBlock(DLManagedTensorVersioned.self, rank: Int(src.ndim)) else {
            throw CortexError.outOfMemory("cannot allocate a DLPack export")
        }
        let m = raw.bindMemory(to: DLManagedTensorVersioned.self, capacity: 1)
        m.initialize(to: DLManagedTensorVersioned(
            version: DLPackVersion(major: 1, minor: 1),
            manager_ctx: Unmanaged<AnyObject>.passRetained(h.owner).toOpaque(),
            deleter: versionedDeleter,
            flags: h.readOnly ? UInt64(DLPACK_FLAG_BITMASK_READ_ONLY) : 0,
            dl_tensor: fillExport(src, shape: shape, strides: strides)))
        out.pointee = m
    }
}

@_cdecl("cx_tensor_to_dlpack_legacy")
public func cx_tensor_to_dlpack_legacy(_ t: OpaquePointer?, _ out: UnsafeMutablePointer<UnsafeMutablePointer<DLManagedTensor>?>?) -> Int32 {
    entry("cx_tensor_to_dlpack_legacy") {
        let h = try resolve(t, .tensor, "tensor", as: TensorHandle.self)
        let out = try requireOut(out, "out")
        let src = h.view.pointee
        guard let (raw, shape, strides) = exportBlock(DLManagedTensor.self, rank: Int(src.ndim)) else {
            throw CortexError.outOfMemory("cannot allocate a DLPack export")
        }
        let m = raw.bindMemory(to: DLManagedTensor.self, capacity: 1)
        m.initialize(to: DLManagedTensor(
            dl_tensor: fillExport(src, shape: shape, strides: strides),
            manager_ctx: Unmanaged<AnyObject>.passRetained(h.owner).toOpaque(),
            deleter: legacyDeleter))
        out.pointee = m
    }
}

// MARK: import

@_cdecl("cx_tensor_from_dlpack")
public func cx_tensor_from_dlpack(_ m: UnsafeMutablePointer<DLManagedTensorVersioned>?, _ out: UnsafeMutablePointer<OpaquePointer?>?) -> Int32 {
    entry("cx_tensor_from_dlpack") {
        guard let m else { throw CortexError.invalidArgument("managed is NULL") }
        // From here on we own `m`: the ForeignTensor calls its deleter exactly once.
        let version = m.pointee.version
        guard version.major == 1 else {
            if let d = m.pointee.deleter { d(m) }
            throw CortexError.unsupported("managed tensor has DLPack version \(version.major).\(version.minor); Cortex reads major version 1")
        }
        let foreign = ForeignTensor(.versioned(m))
        guard let out else { throw CortexError.invalidArgument("out is NULL") }
        _ = try InputTensor(UnsafePointer(foreign.view), name: "managed", maskAllowed: true)
        out.pointee = publish(TensorHandle(foreign: foreign), .tensor)
    }
}

@_cdecl("cx_tensor_from_dlpack_legacy")
public func cx_tensor_from_dlpack_legacy(_ m: UnsafeMutablePointer<DLManagedTensor>?, _ out: UnsafeMutablePointer<OpaquePointer?>?) -> Int32 {
    entry("cx_tensor_from_dlpack_legacy") {
        guard let m else { throw CortexError.invalidArgument("managed is NULL") }
        let foreign = ForeignTensor(.legacy(m))
        guard let out else { throw CortexError.invalidArgument("out is NULL") }
        _ = try InputTensor(UnsafePointer(foreign.view), name: "managed", maskAllowed: true)
        out.pointee = publish(TensorHandle(foreign: foreign), .tensor)
    }
}

@_cdecl("cx_tensor_view")
public func cx_tensor_view(_ t: OpaquePointer?, _ out: UnsafeMutablePointer<UnsafePointer<DLTensor>?>?) -> Int32 {
    entry("cx_tensor_view") {
        let h = try resolve(t, .tensor, "tensor", as: TensorHandle.self)
        try requireOut(out, "view").pointee = UnsafePointer(h.view)
    }
}

@_cdecl("cx_tensor_free")
public func cx_tensor_free(_ t: OpaquePointer?) { retire(t, .tensor) }
