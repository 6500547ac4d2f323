import CCortex
import Cortex

@_cdecl("cx_abi_version")
public func cx_abi_version() -> UInt32 { UInt32(CX_ABI_VERSION) }

@_cdecl("cx_set_num_threads")
public func cx_set_num_threads(_ n: Int32) -> Int32 {
    entry("cx_set_num_threads") { BLAS.setThreads(n <= 0 ? 0 : Int(n)) }
}

@_cdecl("cx_get_num_threads")
public func cx_get_num_threads() -> Int32 { Int32(clamping: BLAS.threads) }

@_cdecl("cx_load_default_options")
public func cx_load_default_options() -> cx_load_options {
    cx_load_options(struct_size: UInt32(MemoryLayout<cx_load_options>.size), nan_policy: 0, flags: 0,
                    reserved: (0, 0, 0, 0, 0))
}

/// An options struct as cortex.h's rule reads it: `struct_size` first; a struct from an
/// older header (at least `v1Size`, the struct as ABI v1 shipped it, which later versions
/// only append to) takes the defaults for the fields it lacks; a larger one (a newer
/// header) is accepted only when the bytes this library does not know are zero. NULL:
/// the defaults. `what` names the struct in messages ("load" for cx_load_options).
func readOptionsStruct<T>(_ p: UnsafePointer<T>?, defaults: T, what: String,
                          v1Size: Int = MemoryLayout<T>.size) throws -> T {
    var out = defaults
    guard let p else { return out }
    let raw = UnsafeRawPointer(p)
    let size = Int(raw.load(as: UInt32.self)), known = MemoryLayout<T>.size
    guard size >= v1Size, size <= 4096 else {
        throw CortexError.invalidArgument(
            "options.struct_size \(size) is invalid: at least \(v1Size) (use cx_\(what)_default_options)")
    }
    if size > known, (known..<size).contains(where: { raw.load(fromByteOffset: $0, as: UInt8.self) != 0 }) {
        throw CortexError.invalidArgument(
            "options hold fields this library does not know (struct_size \(size), this library's is \(known)): update libcortex")
    }
    withUnsafeMutableBytes(of: &out) { $0.copyMemory(from: UnsafeRawBufferPointer(start: raw, count: min(size, known))) }
    return out
}

/// Reserved fields must be zero (they may mean something in a later version).
func requireZero<T>(_ reserved: T) throws {
    guard withUnsafeBytes(of: reserved, { $0.allSatisfy { $0 == 0 } }) else {
        throw CortexError.invalidArgument("options.reserved must be zero")
    }
}

/// The caller's load options.
func readOptions(_ p: UnsafePointer<cx_load_options>?) throws
    -> (policy: Model.NaNPolicy, int8: Bool, checkWeights: Bool, srht: AxonCore.Hadamard?) {
    let o = try readOptionsStruct(p, defaults: cx_load_default_options(), what: "load")
    try requireZero(o.reserved)
    guard let policy = Model.NaNPolicy(rawValue: o.nan_policy) else {
        throw CortexError.invalidArgument("options.nan_policy \(o.nan_policy) is not a cx_nan_policy")
    }
    let int8 = UInt32(CX_LOAD_INT8_WEIGHTS.rawValue), check = UInt32(CX_LOAD_CHECK_WEIGHTS.rawValue)
    let srht = UInt32(CX_LOAD_SRHT_CPU_REFERENCE.rawValue)
    guard o.flags & ~(int8 | check | srht) == 0 else {
        throw CortexError.invalidArgument("options.flags \(o.flags) has unknown bits (known: CX_LOAD_INT8_WEIGHTS = \(int8), "
                                          + "CX_LOAD_CHECK_WEIGHTS = \(check), CX_LOAD_SRHT_CPU_REFERENCE = \(srht))")
    }
    return (policy, o.flags & int8 != 0, o.flags & check != 0, o.flags & srht != 0 ? .cpuReference : nil)
}
