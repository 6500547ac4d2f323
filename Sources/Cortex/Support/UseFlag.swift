import Synchronization

/// One user at a time, detected rather than locked: the handles that are not thread-safe
/// by design (states, caches, sessions, streams) take this flag for each call, and a
/// second concurrent caller gets `CortexError.busy` instead of corrupting memory.
/// (An Atomic inlined into Cortex's own code, so ThreadSanitizer sees it, unlike Mutex.)
public struct UseFlag: ~Copyable, Sendable {
    private let taken = Atomic<Bool>(false)

    public init() {}

    /// Take the flag, or throw `.busy("<what> is in use by another thread")`.
    public func acquire(_ what: String) throws {
        guard taken.compareExchange(expected: false, desired: true, ordering: .acquiring).exchanged else {
            throw CortexError.busy("\(what) is in use by another thread")
        }
    }

    public func release() { taken.store(false, ordering: .releasing) }

    /// Run `body` holding the flag (else throw `.busy`).
    public func run<R>(_ what: String, _ body: () throws -> R) throws -> R {
        try acquire(what)
        defer { release() }
        return try body()
    }
}
