import Cortex
import XCTest

#if canImport(Glibc)
import Glibc
#endif

/// The thread contract: a model is shared freely; a state is used by one thread at a
/// time, and a second concurrent user is refused (`.busy`), never served garbage.
/// CI also runs this class under ThreadSanitizer (`swift test --sanitize=thread`).
final class ConcurrencyTests: XCTestCase {
    /// Run `body(i)` on `n` real threads at once.
    func onThreads(_ n: Int, _ body: @escaping @Sendable (Int) -> Void) {
        let group = DispatchGroupLike(n)
        for i in 0..<n { group.spawn { body(i) } }
        group.wait()
    }

    func testTwoThreadsTwoStatesOneModel() throws {
        let g = try Golden("lstm_stack")
        let x = try g.tensor("seq/x")
        let want = try g.model.forward(x, state: try g.model.makeState(batch: 3)).toArray()
        let model = g.model
        let results = LockedArray()
        onThreads(2) { _ in
            var ok = true
            for _ in 0..<50 {
                guard let s = try? model.makeState(batch: 3), let y = try? model.forward(x, state: s) else { ok = false; break }
                if y.toArray() != want { ok = false }
            }
            results.append(ok)
        }
        XCTAssertEqual(results.values, [true, true], "each thread reproduces the single-threaded output bit for bit")
    }

    func testSharedStateIsRefusedNotCorrupted() throws {
        let g = try Golden("lstm_stack")
        let model = g.model
        let state = try model.makeState(batch: 3)
        let x = try g.tensor("seq/x")
        let outcomes = LockedArray()
        onThreads(2) { _ in
            for _ in 0..<200 {
                do { _ = try model.forward(x, state: state); outcomes.append(true) } catch CortexError.busy { outcomes.append(false) } catch {
                    XCTFail("unexpected error \(error)")
                }
            }
        }
        XCTAssertEqual(outcomes.values.count, 400)
        print("[threads] shared state: \(outcomes.values.filter { $0 }.count) calls ran, \(outcomes.values.filter { !$0 }.count) refused as busy")
    }
}

/// Minimal pthread-based fork/join (no Foundation Thread needed).
final class DispatchGroupLike: @unchecked Sendable {
    private var threads: [pthread_t] = []
    init(_ n: Int) { threads.reserveCapacity(n) }

    func spawn(_ body: @escaping @Sendable () -> Void) {
        let box = Unmanaged.passRetained(Box(body)).toOpaque()
        var t = pthread_t()
        pthread_create(&t, nil, { arg in
            let b = Unmanaged<Box>.fromOpaque(arg!).takeRetainedValue()
            b.body()
            return nil
        }, box)
        threads.append(t)
    }

    func wait() { for t in threads { pthread_join(t, nil) } }

    final class Box { let body: @Sendable () -> Void; init(_ b: @escaping @Sendable () -> Void) { body = b } }
}

final class LockedArray: @unchecked Sendable {
    private var lock = pthread_mutex_t()
    private var items: [Bool] = []
    init() { pthread_mutex_init(&lock, nil) }
    func append(_ v: Bool) { pthread_mutex_lock(&lock); items.append(v); pthread_mutex_unlock(&lock) }
    var values: [Bool] { pthread_mutex_lock(&lock); defer { pthread_mutex_unlock(&lock) }; return items }
}

/// Cortex splits matrix work over up to two threads of its own; the split must not
/// change results.
final class ThreadCountTests: XCTestCase {
    func testOneAndTwoThreadsAgree() throws {
        let g = try Golden("lstm_stack")
        let x = try g.tensor("seq/x")
        defer { BLAS.setThreads(0) }
        BLAS.setThreads(1)
        XCTAssertEqual(BLAS.threads, 1)
        let one = try g.model.forward(x, state: try g.model.makeState(batch: 3)).toArray()
        BLAS.setThreads(2)
        let two = try g.model.forward(x, state: try g.model.makeState(batch: 3)).toArray()
        let diff = zip(one, two).map { abs($0 - $1) }.max() ?? 0
        print("[threads] 1 vs 2 threads: max abs difference \(diff)")
        XCTAssertLessThanOrEqual(diff, 1e-6)
        assertClose(try Tensor(shape: x.shape, values: two), try g.tensor("seq/y"), "seq y with 2 threads")
    }

    /// Columns run their experts in two groups, one per thread: the same results as one
    /// thread, bit for bit, in step and sequence mode (the routed golden too).
    func testColumnExpertsInParallelAgree() throws {
        defer { BLAS.setThreads(0) }
        for name in ["auto_axms", "routed"] {
            let g = try Golden(name)
            let x = try g.tensor("seq/x")
            func run() throws -> [Float] {
                let s = try g.makeState(batch: 3)
                var out = try g.model.forward(x, state: s).toArray()
                for t in 0..<x.shape[1] { out += try g.model.forward(try timeSlice(x, t), state: s).toArray() }
                return out
            }
            BLAS.setThreads(1)
            let one = try run()
            BLAS.setThreads(2)
            let two = try run()
            XCTAssertEqual(one, two, "\(name): 1 and 2 threads agree bitwise")
            print("[threads] \(name): 1 vs 2 threads, \(one.count) values, identical: \(one == two)")
        }
    }
}
