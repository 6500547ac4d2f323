import CCortex
import Cortex

// Every exported function is a one-liner through `entry`: it runs the body, turns
// a thrown CortexError into its status code and the thread-local message
// "[cx_function] what went wrong", and never lets anything escape.

@inline(__always)
func entry(_ function: StaticString, _ body: () throws -> Void) -> Int32 {
    do {
        try body()
        cxk_internal_clear_error()
        return 0
    } catch let e as CortexError {
        setError("[\(function)] \(e.message)")
        return e.statusCode
    } catch {
        setError("[\(function)] unexpected error: \(error)")
        return 15
    }
}

func setError(_ message: String) {
    var m = message
    m.withUTF8 { buf in
        buf.withMemoryRebound(to: CChar.self) { cxk_internal_set_error($0.baseAddress, $0.count) }
    }
}

/// Write `value` through an out-pointer that must not be NULL.
@inline(__always)
func requireOut<T>(_ p: UnsafeMutablePointer<T>?, _ name: String) throws -> UnsafeMutablePointer<T> {
    guard let p else { throw CortexError.invalidArgument("\(name) is NULL") }
    return p
}

func string(_ p: UnsafePointer<CChar>?, _ name: String) throws -> String {
    guard let p else { throw CortexError.invalidArgument("\(name) is NULL") }
    guard let s = String(validatingCString: p) else { throw CortexError.invalidArgument("\(name) is not valid UTF-8") }
    return s
}

// MARK: - handle registry

/// Live handles by address and kind. Lets every entry point refuse NULL, freed and
/// wrong-kind handles with a message instead of dereferencing garbage.
enum HandleKind: String { case model, state, tensor, cache, generator, session, store, spikeStream = "spike stream" }

let liveHandles = Locked<[UInt: HandleKind]>([:])

func publish<T: AnyObject & Sendable>(_ object: T, _ kind: HandleKind) -> OpaquePointer {
    let raw = Unmanaged.passRetained(object).toOpaque()
    liveHandles.withLock { $0[UInt(bitPattern: raw)] = kind }
    return OpaquePointer(raw)
}

/// The object behind a handle, retained for the caller's use.
func resolve<T: AnyObject & Sendable>(_ p: OpaquePointer?, _ kind: HandleKind, _ name: String, as: T.Type) throws -> T {
    guard let p else { throw CortexError.invalidHandle("\(name) is NULL") }
    let key = UInt(bitPattern: UnsafeRawPointer(p))
    // Retain under the lock, so a concurrent free cannot release it under our feet.
    let found: HandleKind? = liveHandles.withLock { live in
        let k = live[key]
        if k == kind { _ = Unmanaged<T>.fromOpaque(UnsafeRawPointer(p)).retain() }
        return k
    }
    guard let k = found else { throw CortexError.invalidHandle("\(name) is not a live handle (already freed?)") }
    guard k == kind else { throw CortexError.invalidHandle("\(name) is a \(k.rawValue) handle, expected a \(kind.rawValue)") }
    return Unmanaged<T>.fromOpaque(UnsafeRawPointer(p)).takeRetainedValue()
}

/// Unregister and release a handle; NULL, unknown or wrong-kind pointers are ignored.
func retire(_ p: OpaquePointer?, _ kind: HandleKind) {
    guard let p else { return }
    let key = UInt(bitPattern: UnsafeRawPointer(p))
    let ok = liveHandles.withLock { live -> Bool in
        guard live[key] == kind else { return false }
        live[key] = nil
        return true
    }
    if ok { Unmanaged<AnyObject>.fromOpaque(UnsafeRawPointer(p)).release() }
}
