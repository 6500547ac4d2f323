import Cortex
#if canImport(Glibc)
import Glibc
#endif

/// Continuous batching with an earliest-deadline-first queue.
///
/// Jobs carry a batch key (jobs of one key can run as one batch: one model entry point),
/// an optional absolute deadline (monotonic seconds) and an optional exclusive resource
/// (a session id). `workers` threads each repeatedly take the job with the earliest
/// deadline (jobs without one rank by arrival, after a default budget), add the most
/// urgent other jobs of the same key up to `maxBatch`, and run them together. A job
/// whose resource is in a batch being run waits for that batch (so one session's steps
/// never run at once, and run in order); other batches run side by side, so a long
/// generation holds one worker, not the server. Batches form while the worker is busy (continuous
/// batching: whatever queued during one batch is the next); with `maxWait` > 0 an idle
/// worker also waits for company, but only until the batch is full, the first job has
/// waited `maxWait`, or waiting longer would make the most urgent job miss its deadline
/// given the recent batch time.
/// A job that finishes after its deadline is still answered, and counted as a miss.
/// A full queue refuses new jobs (`.overloaded`), a draining scheduler too
/// (`.draining`); `drain()` finishes every queued job before it returns.
public final class BatchScheduler<Job>: @unchecked Sendable {
    public struct Options: Sendable {
        public var maxBatch: Int
        public var maxWait: Double          // seconds a job may wait for company
        public var maxQueue: Int
        public var defaultBudget: Double    // deadline of a job that gives none (seconds)
        public var workers: Int             // threads running batches
        public init(maxBatch: Int = 32, maxWait: Double = 0, maxQueue: Int = 1024, defaultBudget: Double = 1.0,
                    workers: Int = 1) {
            self.maxBatch = maxBatch; self.maxWait = maxWait; self.maxQueue = maxQueue; self.defaultBudget = defaultBudget
            self.workers = workers
        }
    }

    public enum Refusal: Error, Sendable { case overloaded(Int), draining }

    /// What the worker hands a batch to: the jobs of one key, most urgent first.
    public typealias Executor = (_ key: String, _ jobs: [Job]) -> Void

    /// Called after each batch: key, size, seconds it took, deadline misses in it.
    public var onBatch: ((String, Int, Double, Int) -> Void)?

    struct Pending {
        let job: Job
        let key: String
        let arrival: Double
        let deadline: Double
        let explicit: Bool      // the client gave the deadline (only those can be missed)
        let sequence: Int
        let exclusive: String?  // a resource no two running batches share
    }

    public let options: Options
    private let execute: Executor
    private var queue: [Pending] = []
    private var sequence = 0
    private var draining = false
    private var stopped = false
    private var running = 0                 // jobs in the batches being run
    private var held: [String: Int] = [:]   // exclusive resources of the batches being run
    private var batchSeconds: [String: Double] = [:]   // EWMA per key
    private var mutex = pthread_mutex_t()
    private var wake = pthread_cond_t()
    private var idle = pthread_cond_t()
    private var threads: [pthread_t] = []

    public init(options: Options, execute: @escaping Executor) throws {
        guard options.maxBatch >= 1, options.maxQueue >= 1, options.maxWait >= 0, options.defaultBudget > 0,
              (1...256).contains(options.workers) else {
            throw CortexError.invalidArgument(
                "scheduler: maxBatch and maxQueue must be >= 1, maxWait >= 0, defaultBudget > 0, workers 1...256")
        }
        self.options = options
        self.execute = execute
        pthread_mutex_init(&mutex, nil)
        pthread_cond_init(&wake, nil)
        pthread_cond_init(&idle, nil)
    }

    /// Start the worker threads (once).
    public func start() throws {
        lock()
        let started = !threads.isEmpty
        unlock()
        if started { return }
        for _ in 0..<options.workers {
            let t = try startThread { [self] in self.work() }
            lock()
            threads.append(t)
            unlock()
        }
    }

    deinit {
        pthread_mutex_destroy(&mutex)
        pthread_cond_destroy(&wake)
        pthread_cond_destroy(&idle)
    }

    private func lock() { pthread_mutex_lock(&mutex) }
    private func unlock() { pthread_mutex_unlock(&mutex) }

    /// Jobs waiting (not counting the batch being run).
    public var depth: Int { lock(); defer { unlock() }; return queue.count }

    /// Queue a job. `deadline` is absolute (monotonicSeconds()); nil: arrival + defaultBudget.
    /// `exclusive`: a resource (e.g. a session id) that no two running batches may share.
    public func submit(_ job: Job, key: String, deadline: Double?, exclusive: String? = nil) throws {
        let now = monotonicSeconds()
        lock()
        defer { unlock() }
        if draining || stopped { throw Refusal.draining }
        guard queue.count < options.maxQueue else { throw Refusal.overloaded(options.maxQueue) }
        sequence += 1
        queue.append(Pending(job: job, key: key, arrival: now, deadline: deadline ?? now + options.defaultBudget,
                             explicit: deadline != nil, sequence: sequence, exclusive: exclusive))
        pthread_cond_signal(&wake)
    }

    /// Refuse new jobs, run every queued one, stop the workers. Returns when done.
    public func drain() {
        lock()
        draining = true
        pthread_cond_broadcast(&wake)
        while !queue.isEmpty || running > 0 { pthread_cond_wait(&idle, &mutex) }
        stopped = true
        pthread_cond_broadcast(&wake)
        let all = threads
        threads = []
        unlock()
        for t in all { pthread_join(t, nil) }
    }

    public var isDraining: Bool { lock(); defer { unlock() }; return draining }

    /// The batch to run now, or the time to wait until (absolute) before deciding again.
    /// Call with the lock held.
    func pick(now: Double) -> (batch: [Pending]?, wakeAt: Double?) {
        // Jobs whose resource a running batch holds wait for it.
        var order = queue.indices.filter { queue[$0].exclusive.map { held[$0] == nil } ?? true }
        guard !order.isEmpty else { return (nil, nil) }
        order.sort { (queue[$0].deadline, queue[$0].sequence) < (queue[$1].deadline, queue[$1].sequence) }
        let first = queue[order[0]]
        order = order.filter { queue[$0].key == first.key }
        let chosen = Array(order.prefix(options.maxBatch))
        let oldest = chosen.map { queue[$0].arrival }.min()!
        let service = batchSeconds[first.key] ?? 0
        // Wait for company only while it is free: not full, not waited maxWait, not
        // so late that the most urgent job would miss its deadline, not draining.
        let waitUntil = min(oldest + options.maxWait, first.deadline - service)
        if chosen.count < options.maxBatch && now < waitUntil && !draining {
            return (nil, waitUntil)
        }
        let taken = Set(chosen)
        let batch = chosen.map { queue[$0] }
        queue = queue.indices.filter { !taken.contains($0) }.map { queue[$0] }
        return (batch, nil)
    }

    private func work() {
        lock()
        while true {
            if stopped { break }
            let now = monotonicSeconds()
            let (batch, wakeAt) = pick(now: now)
            guard let batch else {
                if queue.isEmpty { pthread_cond_broadcast(&idle) }
                if let wakeAt { timedWait(until: wakeAt) } else { pthread_cond_wait(&wake, &mutex) }
                continue
            }
            running += batch.count
            for p in batch { if let r = p.exclusive { held[r, default: 0] += 1 } }
            unlock()
            let key = batch[0].key
            let start = monotonicSeconds()
            execute(key, batch.map(\.job))
            let end = monotonicSeconds()
            let misses = batch.filter { $0.explicit && end > $0.deadline }.count
            onBatch?(key, batch.count, end - start, misses)
            lock()
            running -= batch.count
            for p in batch {
                guard let r = p.exclusive else { continue }
                held[r] = held[r] == 1 ? nil : held[r].map { $0 - 1 }
            }
            pthread_cond_broadcast(&wake)  // jobs waiting for these resources may go now
            let previous = batchSeconds[key] ?? (end - start)
            batchSeconds[key] = 0.8 * previous + 0.2 * (end - start)
            if queue.isEmpty { pthread_cond_broadcast(&idle) }
        }
        unlock()
    }

    private func timedWait(until t: Double) {
        // pthread_cond_timedwait takes CLOCK_REALTIME by default: convert the interval.
        var now = timespec()
        clock_gettime(CLOCK_REALTIME, &now)
        let delta = max(0, t - monotonicSeconds())
        var ns = Int(now.tv_nsec) + Int(delta * 1e9)
        var abs = timespec(tv_sec: now.tv_sec + ns / 1_000_000_000, tv_nsec: 0)
        ns %= 1_000_000_000
        abs.tv_nsec = ns
        pthread_cond_timedwait(&wake, &mutex, &abs)
    }
}

/// The closure a new thread runs (pthread_create takes a C function and one pointer).
final class ThreadBody {
    let run: () -> Void
    init(_ run: @escaping () -> Void) { self.run = run }
}

private func threadMain(_ raw: UnsafeMutableRawPointer?) -> UnsafeMutableRawPointer? {
    guard let raw else { return nil }
    Unmanaged<ThreadBody>.fromOpaque(raw).takeRetainedValue().run()
    return nil
}

/// Start a joinable thread running `body`.
func startThread(_ body: @escaping () -> Void) throws -> pthread_t {
    let box = Unmanaged.passRetained(ThreadBody(body)).toOpaque()
    var t = pthread_t()
    let rc = pthread_create(&t, nil, threadMain, box)
    guard rc == 0 else {
        Unmanaged<ThreadBody>.fromOpaque(box).release()
        throw CortexError.internal("cannot start a thread (pthread_create: \(rc))")
    }
    return t
}
