@testable import Cortex
@testable import CortexServing
import Dispatch
import XCTest

/// The serving engine's parts without a network: the EDF batch scheduler (order,
/// batching by key, max batch, back-pressure, drain), the binary tensor body, the
/// Prometheus text, and requests through ServingEngine.handle.
final class ServingTests: XCTestCase {
    /// Runs jobs (Ints) and records the batches; the first batch blocks until `gate` opens
    /// so a queue can build up behind it.
    final class Recorder: @unchecked Sendable {
        let batches = Locked<[[Int]]>([])
        let gate = DispatchSemaphore(value: 0)
        var blockFirst = true
        func run(_ key: String, _ jobs: [Int]) {
            let first = batches.withLock { b -> Bool in b.append(jobs); return b.count == 1 }
            if first && blockFirst { gate.wait() }
        }
    }

    func testEarliestDeadlineFirstAndBatchingByKey() throws {
        let rec = Recorder()
        let s = try BatchScheduler<Int>(options: .init(maxBatch: 3, maxWait: 0, maxQueue: 100)) { rec.run($0, $1) }
        try s.start()
        let now = monotonicSeconds()
        try s.submit(0, key: "a", deadline: now + 100)        // runs alone, blocks the worker
        while rec.batches.withLock({ $0.isEmpty }) { usleep(1000) }
        // Queued behind it: deadlines out of arrival order, two keys.
        try s.submit(1, key: "a", deadline: now + 50)
        try s.submit(2, key: "b", deadline: now + 0.5)
        try s.submit(3, key: "a", deadline: now + 10)
        try s.submit(4, key: "a", deadline: now + 30)
        try s.submit(5, key: "a", deadline: now + 20)
        try s.submit(6, key: "b", deadline: nil)               // default budget: 1 s
        XCTAssertEqual(s.depth, 6)
        rec.gate.signal()
        s.drain()
        let got = rec.batches.withLock { $0 }
        // b (deadline 0.5 s) first with the other b (1 s); then a by deadline, at most 3 per batch.
        XCTAssertEqual(got, [[0], [2, 6], [3, 5, 4], [1]])
        XCTAssertThrowsError(try s.submit(7, key: "a", deadline: nil)) { e in
            guard case BatchScheduler<Int>.Refusal.draining = e else { return XCTFail("\(e)") }
        }
    }

    func testFullQueueRefusesAndDrainRunsEverything() throws {
        let rec = Recorder()
        let s = try BatchScheduler<Int>(options: .init(maxBatch: 64, maxWait: 0, maxQueue: 4)) { rec.run($0, $1) }
        try s.start()
        try s.submit(0, key: "k", deadline: nil)
        while rec.batches.withLock({ $0.isEmpty }) { usleep(1000) }
        for i in 1...4 { try s.submit(i, key: "k", deadline: nil) }
        XCTAssertThrowsError(try s.submit(5, key: "k", deadline: nil)) { e in
            guard case BatchScheduler<Int>.Refusal.overloaded(4) = e else { return XCTFail("\(e)") }
        }
        rec.gate.signal()
        s.drain()
        XCTAssertEqual(rec.batches.withLock { $0 }, [[0], [1, 2, 3, 4]])
    }

    /// Several workers: a long batch holds one of them while other batches run; jobs on
    /// one resource (a session) never run in two batches at once and run in submission
    /// order; drain finishes everything.
    func testWorkersRunSideBySideButNeverShareAResource() throws {
        let gate = DispatchSemaphore(value: 0)
        let log = Locked<[String]>([])
        let inFlight = Locked<[String: Int]>([:]), overlaps = Locked(0)
        let s = try BatchScheduler<(String, Int)>(options: .init(maxBatch: 4, maxQueue: 1000, workers: 3)) { key, jobs in
            if key == "slow" { gate.wait(); log.withLock { $0.append("slow") }; return }
            let mine = Set(jobs.map(\.0))  // a batch may hold several steps of one resource (run in rounds)
            for r in mine {
                inFlight.withLock { m in m[r, default: 0] += 1; if m[r]! > 1 { overlaps.withLock { $0 += 1 } } }
            }
            usleep(200)
            for (r, i) in jobs { log.withLock { $0.append("\(r):\(i)") } }
            for r in mine { inFlight.withLock { $0[r]! -= 1 } }
        }
        try s.start()
        try s.submit(("x", 0), key: "slow", deadline: nil)
        while s.depth > 0 { usleep(500) }
        var sent: [String: [Int]] = [:]
        for i in 0..<120 {
            let r = ["a", "b", "c"][i % 3]
            try s.submit((r, i), key: "step", deadline: nil, exclusive: r)
            sent[r, default: []].append(i)
        }
        // The slow batch still blocks its worker; the others finish every step.
        let t0 = monotonicSeconds()
        while log.withLock({ $0.count }) < 120 && monotonicSeconds() - t0 < 10 { usleep(1000) }
        XCTAssertEqual(log.withLock { $0.count }, 120, "steps ran while one worker was busy")
        gate.signal()
        s.drain()
        let got = log.withLock { $0 }
        XCTAssertEqual(got.last, "slow")
        XCTAssertEqual(overlaps.withLock { $0 }, 0, "a resource was in two batches at once")
        for r in ["a", "b", "c"] {
            let order = got.filter { $0.hasPrefix(r + ":") }.map { Int($0.dropFirst(2))! }
            XCTAssertEqual(order, sent[r], "\(r): steps in submission order")
        }
    }

    func testMaxWaitGathersCompanyButNotPastADeadline() throws {
        let rec = Recorder()
        rec.blockFirst = false
        let s = try BatchScheduler<Int>(options: .init(maxBatch: 8, maxWait: 0.2, maxQueue: 100)) { rec.run($0, $1) }
        try s.start()
        let t0 = monotonicSeconds()
        try s.submit(1, key: "k", deadline: nil)
        try s.submit(2, key: "k", deadline: nil)
        while rec.batches.withLock({ $0.isEmpty }) { usleep(500) }
        let waited = monotonicSeconds() - t0
        XCTAssertEqual(rec.batches.withLock { $0 }, [[1, 2]])
        XCTAssertGreaterThanOrEqual(waited, 0.15, "an idle worker waits max_wait for company")
        // An urgent job is not held back for company.
        let t1 = monotonicSeconds()
        try s.submit(3, key: "k", deadline: t1 + 0.01)
        while rec.batches.withLock({ $0.count < 2 }) { usleep(500) }
        XCTAssertLessThan(monotonicSeconds() - t1, 0.1)
        s.drain()
    }

    func testTensorBodyRoundTripAndRefusals() throws {
        let bytes = TensorBody.encode([("x", shape: [2, 2], values: [1, -2, 3.5, 0]), ("empty", shape: [0], values: [])])
        let b = try TensorBody.parse(bytes)
        XCTAssertEqual(b["x"]?.shape, [2, 2])
        XCTAssertEqual(b["x"]?.floats, [1, -2, 3.5, 0])
        XCTAssertEqual(b["empty"]?.count, 0)
        XCTAssertThrowsError(try b["x"]!.integers("x")) { XCTAssertTrue("\($0)".contains("float32 is not accepted")) }
        // int64 / int16 / uint8 read exactly.
        var ints = Array("CXTB".utf8) + [1, 0, 1, 0, 1, UInt8(ascii: "n"), 2, 1] + le(3, 8)
        ints += le(UInt64(bitPattern: -5), 8) + le(1 << 40, 8) + le(7, 8)
        XCTAssertEqual(try TensorBody.parse(ints)["n"]?.ints, [-5, 1 << 40, 7])
        func refused(_ b: [UInt8], _ message: String) {
            XCTAssertThrowsError(try TensorBody.parse(b)) { e in XCTAssertTrue("\(e)".contains(message), "\(e)") }
        }
        refused(Array("NOPE".utf8), "magic")
        refused(Array(bytes.dropLast()), "truncated")
        refused(bytes + [0], "1 bytes after the last tensor")
        refused(Array("CXTB".utf8) + [2, 0, 0, 0], "version 2")
        refused(Array("CXTB".utf8) + [1, 0, 1, 0, 1, 65, 9, 1] + le(1, 8), "unknown dtype code 9")
        refused(Array("CXTB".utf8) + [1, 0, 1, 0, 1, 65, 3, 2] + le(1 << 40, 8) + le(1 << 40, 8), "larger than the body")
        refused(Array("CXTB".utf8) + [1, 0, 1, 0, 1, 65, 3, 5], "rank 5")
        refused(Array("CXTB".utf8) + [1, 0, 2, 0] + [1, 65, 3, 0, 0, 0, 0, 0] + [1, 65, 3, 0, 0, 0, 0, 0], "appears twice")
    }

    func le(_ v: UInt64, _ n: Int) -> [UInt8] { (0..<n).map { UInt8(truncatingIfNeeded: v >> (8 * UInt64($0))) } }

    func testMetricsText() {
        let m = Metrics()
        m.declare("c_total", type: "counter", help: "A counter.")
        m.declare("h_seconds", type: "histogram", help: "A histogram.", buckets: [0.1, 1])
        m.increment("c_total", [("route", "/x\"y")])
        m.increment("c_total", [("route", "/x\"y")], by: 2)
        m.observe("h_seconds", [("k", "a")], 0.05)
        m.observe("h_seconds", [("k", "a")], 0.5)
        m.observe("h_seconds", [("k", "a")], 5)
        let text = m.render()
        XCTAssertTrue(text.contains("# TYPE c_total counter\n"))
        XCTAssertTrue(text.contains("c_total{route=\"/x\\\"y\"} 3\n"), text)
        XCTAssertTrue(text.contains("h_seconds_bucket{k=\"a\",le=\"0.1\"} 1\n"), text)
        XCTAssertTrue(text.contains("h_seconds_bucket{k=\"a\",le=\"1\"} 2\n"), text)
        XCTAssertTrue(text.contains("h_seconds_bucket{k=\"a\",le=\"+Inf\"} 3\n"), text)
        XCTAssertTrue(text.contains("h_seconds_count{k=\"a\"} 3\n"), text)
        XCTAssertEqual(m.value("c_total", [("route", "/x\"y")]), 3)
    }

    /// One request through the engine, waited for.
    func call(_ e: ServingEngine, _ method: String, _ path: String, _ body: String = "",
              headers: [(String, String)] = []) -> (Int, JSON?) {
        let done = DispatchSemaphore(value: 0)
        let out = Locked<ServingResponse?>(nil)
        e.handle(ServingRequest(method: method, path: path, headers: headers, body: Array(body.utf8))) { r in
            out.withLock { $0 = r }
            done.signal()
        }
        done.wait()
        let r = out.withLock { $0! }
        return (r.status, try? JSON.parse(r.body))
    }

    /// The session limit answers 429 with Retry-After, like a full queue.
    func testSessionLimitSaysWhenToRetry() throws {
        var options = ServingEngine.Options()
        options.maxSessions = 1
        let model = try Golden("lstm_stack").model
        let e = try ServingEngine(model: model, options: options, log: ServingLog(enabled: false))
        defer { e.drain() }
        let x = "{\"x\":[" + Array(repeating: "0", count: model.inputSize).joined(separator: ",") + "]}"
        XCTAssertEqual(call(e, "POST", "/v1/sessions/a/step", x).0, 200)
        let done = DispatchSemaphore(value: 0), answer = Locked<ServingResponse?>(nil)
        e.handle(ServingRequest(method: "POST", path: "/v1/sessions/b/step", body: Array(x.utf8))) { r in
            answer.withLock { $0 = r }
            done.signal()
        }
        done.wait()
        let r = try XCTUnwrap(answer.withLock { $0 })
        XCTAssertEqual(r.status, 429)
        XCTAssertEqual(r.headers.first { $0.0 == "retry-after" }?.1, "1")
    }

    /// With API keys, every route but the health probes needs a listed bearer token.
    func testBearerTokensGuardEveryRouteButHealth() throws {
        var options = ServingEngine.Options()
        options.apiKeys = ["k1", "key-two"]
        let e = try ServingEngine(model: try Golden("lstm_stack").model, options: options, log: ServingLog(enabled: false))
        defer { e.drain() }
        XCTAssertEqual(call(e, "GET", "/healthz").0, 200)
        XCTAssertEqual(call(e, "GET", "/readyz").0, 200)
        XCTAssertEqual(call(e, "GET", "/v1/model").0, 401)
        XCTAssertEqual(call(e, "GET", "/nope").0, 401)  // unknown routes too: nothing is revealed
        for wrong in ["Bearer k", "Bearer k12", "Bearer key-twO", "Token k1", "Bearer", "Bearer  k1"] {
            XCTAssertEqual(call(e, "GET", "/v1/model", headers: [("authorization", wrong)]).0, 401, wrong)
        }
        XCTAssertEqual(call(e, "GET", "/v1/model", headers: [("authorization", "Bearer k1")]).0, 200)
        XCTAssertEqual(call(e, "GET", "/metrics", headers: [("authorization", "bearer key-two")]).0, 200)
        XCTAssertEqual(e.metrics.value("cortex_rejected_total", [("reason", "unauthorized")]), 8)
    }

    /// Non-finite inputs are refused (422, naming the value) by default, so a session is
    /// never poisoned; with `.propagate` they pass.
    func testNonFiniteInputsAreRefusedByDefault() throws {
        let model = try Golden("lstm_stack").model
        let e = try ServingEngine(model: model, log: ServingLog(enabled: false))
        defer { e.drain() }
        var v = Array(repeating: "0", count: model.inputSize)
        v[2] = "1e308"
        let bad = "{\"x\":[" + v.joined(separator: ",") + "]}"
        let (status, json) = call(e, "POST", "/v1/sessions/a/step", bad)
        XCTAssertEqual(status, 422)
        XCTAssertTrue(json?["error"]?.string?.contains("x[2]") ?? false, "\(String(describing: json))")
        // The session was not touched: a good step gives what a fresh session gives.
        let good = "{\"x\":[" + Array(repeating: "0.5", count: model.inputSize).joined(separator: ",") + "]}"
        let first = call(e, "POST", "/v1/sessions/a/step", good).1?["y"]?.array?.compactMap(\.double)
        let fresh = call(e, "POST", "/v1/sessions/b/step", good).1?["y"]?.array?.compactMap(\.double)
        XCTAssertEqual(first, fresh)
        var options = ServingEngine.Options()
        options.nanPolicy = .propagate
        let loose = try ServingEngine(model: model, options: options, log: ServingLog(enabled: false))
        defer { loose.drain() }
        XCTAssertEqual(call(loose, "POST", "/v1/sessions/a/step", bad).0, 200)
    }

    /// Steps may carry their index: a retry of the last step (same index, same input) is
    /// answered from memory, not applied twice; a gap or another input gets 409.
    func testStepIndicesMakeRetriesIdempotent() throws {
        let model = try Golden("lstm_stack").model
        let e = try ServingEngine(model: model, log: ServingLog(enabled: false))
        defer { e.drain() }
        func body(_ v: String, _ step: Int?) -> String {
            "{\"x\":[" + Array(repeating: v, count: model.inputSize).joined(separator: ",") + "]"
                + (step.map { ",\"step\":\($0)" } ?? "") + "}"
        }
        func y(_ j: JSON?) -> [Double] { j?["y"]?.array?.compactMap(\.double) ?? [] }
        let (s0, first) = call(e, "POST", "/v1/sessions/a/step", body("0.5", 0))
        XCTAssertEqual(s0, 200)
        let (r0, again) = call(e, "POST", "/v1/sessions/a/step", body("0.5", 0))  // the client retries
        XCTAssertEqual(r0, 200)
        XCTAssertEqual(y(again), y(first))
        XCTAssertEqual(again?["repeated"]?.bool, true)
        let (c1, conflict) = call(e, "POST", "/v1/sessions/a/step", body("0.25", 0))
        XCTAssertEqual(c1, 409)
        XCTAssertTrue(conflict?["error"]?.string?.contains("expects step 1") ?? false)
        XCTAssertEqual(call(e, "POST", "/v1/sessions/a/step", body("0.5", 5)).0, 409)
        // Step 1 equals a session that never saw the retry: the state advanced once.
        let (s1, second) = call(e, "POST", "/v1/sessions/a/step", body("0.5", 1))
        XCTAssertEqual(s1, 200)
        _ = call(e, "POST", "/v1/sessions/b/step", body("0.5", nil))
        XCTAssertEqual(y(second), y(call(e, "POST", "/v1/sessions/b/step", body("0.5", nil)).1))
    }

    func testEngineDecodesLikeTheDecoderAndRefusesBadInput() throws {
        let model = try Golden("spike/decoder_small").model
        let e = try ServingEngine(model: model, log: ServingLog(enabled: false))
        let (status, json) = call(e, "POST", "/v1/decode", #"{"neuron_ids":[1,5,39],"time_bins":[0,60,119],"values":[1,2,7]}"#)
        XCTAssertEqual(status, 200)
        let ref = try model.spikeDecoder!.decode(neurons: [1, 5, 39], timeBins: [0, 60, 119], values: [1, 2, 7], offsets: [0, 3])
        let got = json?["velocity"]?.array?[0].array?.compactMap { $0.double } ?? []
        XCTAssertEqual(got.count, 3)
        for (a, b) in zip(got, ref.toArray()) { XCTAssertEqual(a, Double(b), accuracy: 1e-7) }
        XCTAssertEqual(call(e, "POST", "/v1/decode", #"{"neuron_ids":[40],"time_bins":[0],"values":[1]}"#).0, 422)
        XCTAssertEqual(call(e, "POST", "/v1/decode", "{").0, 400)
        // A tensor body whose columns differ in length is refused, not cut into windows
        // (it once trapped).
        let ragged = TensorBody.encode([("neuron_ids", [1], [1]), ("time_bins", [2], [3, 4]), ("values", [1], [1])])
        let done = DispatchSemaphore(value: 0), answer = Locked(0)
        e.handle(ServingRequest(method: "POST", path: "/v1/decode", headers: [("content-type", TensorBody.contentType)],
                                body: ragged)) { r in answer.withLock { $0 = r.status }; done.signal() }
        done.wait()
        XCTAssertEqual(answer.withLock { $0 }, 422)
        XCTAssertEqual(call(e, "GET", "/v1/decode").0, 405)
        for path in ["/v1/sessions/victim/a/b", "/v1//sessions/victim", "/v1/sessions//step", "/v1/sessions/"] {
            XCTAssertEqual(ServingEngine.route(of: path), "other", path)
        }
        XCTAssertEqual(ServingEngine.route(of: "/v1/sessions/a/step"), "/v1/sessions/{id}/step")
        XCTAssertEqual(ServingEngine.route(of: "/v1/streams/a"), "/v1/streams/{id}")
        XCTAssertEqual(call(e, "GET", "/nowhere").0, 404)
        XCTAssertEqual(call(e, "POST", "/v1/sessions/a/step", #"{"x":[1]}"#).0, 404)
        XCTAssertEqual(call(e, "GET", "/readyz").0, 200)
        e.drain()
        XCTAssertEqual(call(e, "GET", "/readyz").0, 503)
        let (s, j) = call(e, "POST", "/v1/decode", #"{"neuron_ids":[],"time_bins":[],"values":[]}"#)
        XCTAssertEqual(s, 503)
        XCTAssertEqual(j?["error"]?.string, "the server is shutting down")
        XCTAssertEqual(e.metrics.value("cortex_rejected_total", [("reason", "draining")]), 1)
    }
}
