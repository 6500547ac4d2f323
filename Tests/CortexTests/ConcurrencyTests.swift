import CKernels
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
        let results = reproduces(threads: 2, times: 50, equal: want) { try model.forward(x, state: try model.makeState(batch: 3)) }
        XCTAssertEqual(results, [true, true], "each thread reproduces the single-threaded output bit for bit")
    }

    /// On `threads` threads at once, `times` calls of `run` each; per thread, whether every
    /// result equalled `want` (and none threw).
    func reproduces(threads: Int, times: Int, equal want: [Float], _ run: @escaping @Sendable () throws -> Tensor) -> [Bool] {
        let results = LockedArray()
        onThreads(threads) { _ in
            var ok = true
            for _ in 0..<times {
                guard let y = try? run() else { ok = false; break }
                if y.toArray() != want { ok = false }
            }
            results.append(ok)
        }
        return results.values
    }

    /// Six callers at once on a pool of four threads, every section split as far as it
    /// goes (Column experts, each expert's products nested inside): callers share the
    /// workers, nested sections take only idle ones, nothing deadlocks, and every result
    /// is bitwise the one-thread result.
    func testManyCallersShareThePool() throws {
        let g = try Golden("column")
        let x = try g.tensor("seq/x")
        let model = g.model
        BLAS.setThreads(1)
        let want = try model.forward(x, state: try g.makeState(batch: 3)).toArray()
        cxk_parallel_force_split(1)
        BLAS.setThreads(4)
        defer { cxk_parallel_force_split(0); BLAS.setThreads(0) }
        let results = reproduces(threads: 6, times: 30, equal: want) { try model.forward(x, state: try g.makeState(batch: 3)) }
        XCTAssertEqual(results, [Bool](repeating: true, count: 6), "every caller reproduces one thread's output")
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

/// Cortex splits work over its pool; the split must never change a bit. Every golden
/// model (every stack core and scaffold, OpenMythos GQA and MLA, the spike decoder) runs
/// at 1, 2, 3, 4, 7 and 16 threads with splitting forced even for tiny inputs (so every
/// parallel section really splits), in sequence and step mode, with resets and state
/// carried between calls: outputs and final states are bitwise those of one thread.
final class ThreadCountTests: XCTestCase {
    static let counts = [1, 2, 3, 4, 7, 16]

    /// `run()` at every thread count, forced splitting; each result equals one thread's.
    func assertSameBits(_ what: String, _ run: () throws -> [Float]) throws {
        cxk_parallel_force_split(1)
        defer { cxk_parallel_force_split(0); BLAS.setThreads(0) }
        var first: [Float] = []
        for n in Self.counts {
            BLAS.setThreads(n)
            XCTAssertEqual(BLAS.threads, n)
            let got = try run()
            if n == 1 { first = got; continue }
            let same = got.count == first.count && zip(got, first).allSatisfy { $0.bitPattern == $1.bitPattern }
            XCTAssertTrue(same, "\(what): \(n) threads differ from 1 thread")
            if !same {
                let diff = zip(got, first).map { abs($0 - $1) }.max() ?? .infinity
                print("[threads] \(what): \(n) threads, max abs difference \(diff)")
            }
        }
        print("[threads] \(what): \(first.count) values checked at \(Self.counts) threads")
    }

    /// Stacks: a sequence call with resets, the same input step by step, then a second
    /// sequence call from the carried state; outputs and the final state.
    func testEveryStackGolden() throws {
        XCTAssertGreaterThanOrEqual(stackGoldenNames.count, 17, "stack goldens found: \(stackGoldenNames)")
        for name in stackGoldenNames {
            let g = try Golden(name)
            let x = try g.tensor("seq/x")
            let B = x.shape[0], T = x.shape[1]
            let resets = (0..<(B * T)).map { $0 % 5 == 3 }
            try assertSameBits(name) {
                let s = try g.makeState(batch: B)
                var out = try g.model.forward(x, state: s, resets: resets).toArray()
                for t in 0..<T { out += try g.model.forward(try timeSlice(x, t), state: s).toArray() }
                out += try g.model.forward(x, state: s).toArray()
                for t in s.tensors { out += t.toArray() }
                return out
            }
        }
    }

    /// The LSTM recurrence splits hidden units in blocks of 16: a random stack of width 72
    /// (4 full blocks and one of 8) at every thread count, with resets; sequence mode and
    /// step mode are the same computation (a row's products never depend on the other
    /// rows), so they agree bitwise too.
    func testLSTMRecurrenceBlocks() throws {
        let g = try Golden("lstm_stack")
        let H = 72, B = 3, T = 9
        var rng = SplitMix64(seed: 3)
        var tensors: [(String, Tensor)] = []
        let file = try SafetensorsFile(path: g.dir + "/model/model.safetensors")
        for name in file.names.sorted() {
            let shape = file.entries[name]!.shape.map { $0 == 24 ? H : $0 == 96 ? 4 * H : $0 }
            let count = shape.reduce(1, *)
            tensors.append((name, try Tensor(shape: shape, values: (0..<count).map { _ in
                Float(Double(rng.next() % 2001) / 1000 - 1) * 0.3 })))
        }
        var config = try String(contentsOfFile: g.dir + "/model/config.json", encoding: .utf8)
        config = config.replacingOccurrences(of: "\"d_hidden\": 24", with: "\"d_hidden\": \(H)")
        let model = try Model(configBytes: Array(config.utf8), weightBytes: try SafetensorsFile.write(tensors))
        let x = try Tensor(shape: [B, T, H], values: (0..<(B * T * H)).map { _ in Float(Double(rng.next() % 2001) / 1000 - 1) })
        let resets = (0..<(B * T)).map { $0 % 7 == 4 }
        var seq: [Float] = []
        try assertSameBits("lstm H=72") {
            let s = try model.makeState(batch: B)
            seq = try model.forward(x, state: s, resets: resets).toArray()
            return seq + s.tensors.flatMap { $0.toArray() }
        }
        let s = try model.makeState(batch: B)
        var steps = [Float](repeating: 0, count: B * T * H)
        for t in 0..<T {
            let y = try model.forward(try timeSlice(x, t), state: s, resets: (0..<B).map { resets[$0 * T + t] }).toArray()
            for b in 0..<B { for j in 0..<H { steps[(b * T + t) * H + j] = y[b * H + j] } }
        }
        XCTAssertTrue(zip(steps, seq).allSatisfy { $0.bitPattern == $1.bitPattern }, "step mode = sequence mode, bitwise")
    }

    /// INT8 weights (OpenBLAS products over dequantised tiles) split the same way.
    func testInt8Stacks() throws {
        for name in ["auto_axms", "slstm", "xl"] {
            let g = try Golden(name)
            let model = try Model.load(directory: g.dir + "/model", int8: true)
            let x = try g.tensor("seq/x")
            let B = x.shape[0], T = x.shape[1]
            try assertSameBits(name + " int8") {
                let s = try model.makeState(batch: B)
                var out = try model.forward(x, state: s).toArray()
                for t in 0..<T { out += try model.forward(try timeSlice(x, t), state: s).toArray() }
                return out
            }
        }
    }

    /// OpenMythos: a forward with ACT, a prefill then token-by-token decode through the
    /// paged cache, at B = 2 over 40 tokens (attention blocks, MoE experts, loop glue).
    func testMythos() throws {
        for name in ["gqa", "mla"] {
            let model = try Model.load(directory: repoRoot + "/Tests/goldens/mythos/\(name)/model")
            let V = model.mythos!.config.vocabSize, T = 40, B = 2
            var rng = SplitMix64(seed: 9)
            let ids = (0..<(B * T)).map { _ in Int(rng.next() % UInt64(V)) }
            let part = { (r: Range<Int>) in (0..<B).flatMap { b in r.map { ids[b * T + $0] } } }
            try assertSameBits("mythos \(name)") {
                var out = try model.logits(ids: ids, batch: B).toArray()
                let cache = try model.makeCache(batch: B)
                out += try model.logits(ids: part(0..<20), batch: B, cache: cache).toArray()
                for t in 20..<T { out += try model.logits(ids: part(t..<(t + 1)), batch: B, cache: cache).toArray() }
                return out
            }
        }
    }

    func testSpikeDecoder() throws {
        let g = try Golden("spike/decoder_small")
        let dec = try XCTUnwrap(g.model.spikeDecoder)
        let n = g.cases.entries["long/neuron_id"]!.shape[0]
        let ints = { (k: String) in try g.cases.integers("long/" + k, shape: [n]) }
        let (neurons, times, values) = (try ints("neuron_id"), try ints("time_bin"), try ints("value"))
        let cut = n / 3
        try assertSameBits("spike decoder") {
            try dec.decode(neurons: neurons, timeBins: times, values: values, offsets: [0, cut, cut, n]).toArray()
        }
    }
}
