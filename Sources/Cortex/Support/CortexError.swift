/// Every failure Cortex reports. The cases mirror `cx_status` in include/cortex.h
/// one to one, so the ABI layer only has to map a case to its code.
public enum CortexError: Error, Equatable, CustomStringConvertible {
    case invalidArgument(String)
    case invalidHandle(String)
    case shapeMismatch(String)
    case dtypeMismatch(String)
    case deviceMismatch(String)
    case io(String)
    case parse(String)
    case unsupported(String)
    case missingTensor(String)
    case stateMismatch(String)
    case bufferTooSmall(needed: Int)
    case outOfMemory(String)
    case nanInput(String)
    case busy(String)
    case `internal`(String)
    case notFound(String)

    /// The matching `cx_status` value.
    public var statusCode: Int32 {
        switch self {
        case .invalidArgument: return 1
        case .invalidHandle: return 2
        case .shapeMismatch: return 3
        case .dtypeMismatch: return 4
        case .deviceMismatch: return 5
        case .io: return 6
        case .parse: return 7
        case .unsupported: return 8
        case .missingTensor: return 9
        case .stateMismatch: return 10
        case .bufferTooSmall: return 11
        case .outOfMemory: return 12
        case .nanInput: return 13
        case .busy: return 14
        case .internal: return 15
        case .notFound: return 16
        }
    }

    public var message: String {
        switch self {
        case .invalidArgument(let m), .invalidHandle(let m), .shapeMismatch(let m),
             .dtypeMismatch(let m), .deviceMismatch(let m), .io(let m), .parse(let m),
             .unsupported(let m), .missingTensor(let m), .stateMismatch(let m),
             .outOfMemory(let m), .nanInput(let m), .busy(let m), .internal(let m), .notFound(let m):
            return m
        case .bufferTooSmall(let needed):
            return "buffer too small: \(needed) bytes needed"
        }
    }

    public var description: String { message }

    /// The same error with `context` prepended to its message ("context: message").
    public func prefixed(_ context: String) -> CortexError {
        let m = "\(context): \(message)"
        switch self {
        case .invalidArgument: return .invalidArgument(m)
        case .invalidHandle: return .invalidHandle(m)
        case .shapeMismatch: return .shapeMismatch(m)
        case .dtypeMismatch: return .dtypeMismatch(m)
        case .deviceMismatch: return .deviceMismatch(m)
        case .io: return .io(m)
        case .parse: return .parse(m)
        case .unsupported: return .unsupported(m)
        case .missingTensor: return .missingTensor(m)
        case .stateMismatch: return .stateMismatch(m)
        case .bufferTooSmall: return self
        case .outOfMemory: return .outOfMemory(m)
        case .nanInput: return .nanInput(m)
        case .busy: return .busy(m)
        case .internal: return .internal(m)
        case .notFound: return .notFound(m)
        }
    }
}

/// Overflow-checked size arithmetic for sizes that come from outside (file headers,
/// DLPack shapes, JSON). Never traps: overflow becomes a thrown error.
public enum Checked {
    public static func mul(_ a: Int, _ b: Int, _ what: @autoclosure () -> String) throws -> Int {
        let (r, o) = a.multipliedReportingOverflow(by: b)
        if o { throw CortexError.invalidArgument("\(what()): size overflows") }
        return r
    }

    public static func add(_ a: Int, _ b: Int, _ what: @autoclosure () -> String) throws -> Int {
        let (r, o) = a.addingReportingOverflow(b)
        if o { throw CortexError.invalidArgument("\(what()): size overflows") }
        return r
    }

    /// Product of `dims`, each required to be >= 0.
    public static func count(_ dims: [Int], _ what: @autoclosure () -> String) throws -> Int {
        var n = 1
        for d in dims {
            if d < 0 { throw CortexError.invalidArgument("\(what()): negative dimension \(d)") }
            n = try mul(n, d, what())
        }
        return n
    }
}
