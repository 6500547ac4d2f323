import CCortex
import Cortex

@_cdecl("cx_abi_version")
public func cx_abi_version() -> UInt32 { UInt32(CX_ABI_VERSION) }

let versionString: StaticString = "0.1.0"

@_cdecl("cx_version_string")
public func cx_version_string() -> UnsafePointer<CChar> {
    UnsafeRawPointer(versionString.utf8Start).assumingMemoryBound(to: CChar.self)
}

@_cdecl("cx_set_num_threads")
public func cx_set_num_threads(_ n: Int32) -> Int32 {
    entry("cx_set_num_threads") { BLAS.setThreads(n <= 0 ? 0 : Int(n)) }
}

@_cdecl("cx_get_num_threads")
public func cx_get_num_threads() -> Int32 { Int32(clamping: BLAS.threads) }

@_cdecl("cx_load_default_options")
public func cx_load_default_options() -> cx_load_options {
    cx_load_options(struct_size: UInt32(MemoryLayout<cx_load_options>.size), nan_policy: 0, flags: 0)
}

/// Read the caller's options, honouring struct_size (older, smaller structs are fine).
func readOptions(_ p: UnsafePointer<cx_load_options>?) throws -> (policy: Model.NaNPolicy, int8: Bool, checkWeights: Bool) {
    guard let p else { return (.propagate, false, false) }
    let size = Int(p.pointee.struct_size)
    guard size >= 8, size <= 4096 else {
        throw CortexError.invalidArgument("options.struct_size \(size) is invalid (use cx_load_default_options)")
    }
    guard let policy = Model.NaNPolicy(rawValue: p.pointee.nan_policy) else {
        throw CortexError.invalidArgument("options.nan_policy \(p.pointee.nan_policy) is not a cx_nan_policy")
    }
    let flags = size >= 12 ? p.pointee.flags : 0
    let int8 = UInt32(CX_LOAD_INT8_WEIGHTS.rawValue), check = UInt32(CX_LOAD_CHECK_WEIGHTS.rawValue)
    guard flags & ~(int8 | check) == 0 else {
        throw CortexError.invalidArgument(
            "options.flags \(flags) has unknown bits (known: CX_LOAD_INT8_WEIGHTS = \(int8), CX_LOAD_CHECK_WEIGHTS = \(check))")
    }
    return (policy, flags & int8 != 0, flags & check != 0)
}
