#if canImport(Glibc)
import Glibc
#endif

/// A value guarded by a pthread mutex: `locked.withLock { $0 ... }`.
///
/// Cortex uses this instead of `Synchronization.Mutex` because on Linux Mutex waits in
/// an uninstrumented futex slow path: under ThreadSanitizer every contended Mutex looks
/// like a data race (seen in CI: a report on a Mutex-guarded array in ServingTests).
/// pthread mutexes are intercepted by TSan, so a report here is a real race.
public final class Locked<Value>: @unchecked Sendable {
    private let mutex: UnsafeMutablePointer<pthread_mutex_t>
    private var value: Value

    public init(_ value: Value) {
        self.value = value
        mutex = .allocate(capacity: 1)
        mutex.initialize(to: pthread_mutex_t())
        pthread_mutex_init(mutex, nil)
    }

    deinit {
        pthread_mutex_destroy(mutex)
        mutex.deallocate()
    }

    /// Run `body` with the value, holding the lock. Not reentrant.
    @inline(__always)
    public func withLock<R>(_ body: (inout Value) throws -> R) rethrows -> R {
        pthread_mutex_lock(mutex)
        defer { pthread_mutex_unlock(mutex) }
        return try body(&value)
    }
}
