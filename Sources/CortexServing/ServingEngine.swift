import Cortex
import Synchronization
#if canImport(Glibc)
import Glibc
#endif

/// An HTTP request as the engine sees it (the transport — `cortex-serve`'s SwiftNIO
/// layer, or a test — parses the wire format).
public struct ServingRequest: Sendable {
    public var method: String
    public var path: String
    /// Header names lowercased.
    public var headers: [(String, String)]
    public var body: [UInt8]
    public init(method: String, path: String, headers: [(String, String)] = [], body: [UInt8] = []) {
        self.method = method; self.path = path; self.headers = headers; self.body = body
    }
    public func header(_ name: String) -> String? { headers.first { $0.0 == name }?.1 }
}

public struct ServingResponse: Sendable {
    public var status: Int
    public var contentType: String
    public var body: [UInt8]
    public var headers: [(String, String)] = []
    public init(status: Int, contentType: String = "application/json", body: [UInt8], headers: [(String, String)] = []) {
        self.status = status; self.contentType = contentType; self.body = body; self.headers = headers
    }
    static func json(_ status: Int, _ v: JSON, headers: [(String, String)] = []) -> ServingResponse {
        ServingResponse(status: status, body: Array((v.serialized + "\n").utf8), headers: headers)
    }
    static func error(_ status: Int, _ message: String, headers: [(String, String)] = []) -> ServingResponse {
        json(status, .object([("error", .string(message)), ("status", .number(Double(status)))]), headers: headers)
    }
}

/// The serving engine behind `cortex-serve`: routes requests to one loaded model,
/// batches model calls across requests and sessions with a `BatchScheduler`
/// (earliest deadline first), and keeps metrics and sessions.
///
/// Endpoints (JSON unless noted; errors are `{"error": message, "status": code}`):
///
///     GET  /healthz /readyz /metrics /v1/model
///     POST /v1/decode                 spike_decoder: windows of events -> velocity (stateless)
///     POST /v1/streams/{id}           spike_decoder: open a stream with options
///     POST /v1/streams/{id}/step      one stride of a stream (opened on first use)
///     POST /v1/sessions/{id}/step     recurrent stacks: x [D_in] -> y [D_out], state kept per id
///     POST /v1/sessions/{id}/forward  sidecars: {"layer", "h": [T][D]} -> y [T][D], memory kept per id
///     POST /v1/generate               open_mythos: ids -> new tokens (greedy or seeded sampling)
///     DELETE /v1/streams/{id}, /v1/sessions/{id}
///
/// `/v1/decode` and the step endpoints also take the binary body `TensorBody`
/// (`Content-Type: application/x-cortex-tensors`) and answer in it when asked
/// (`Accept: application/x-cortex-tensors`). A deadline comes as `"deadline_ms"` or the
/// `X-Deadline-Ms` header (milliseconds from arrival).
public final class ServingEngine: @unchecked Sendable {
    public struct Options: Sendable {
        public var scheduler = BatchScheduler<Job>.Options()
        public var maxSessions = 4096
        public var maxBodyBytes = 8 << 20
        public var maxEventsPerRequest = 1 << 16
        public var logRequests = false
        /// Non-finite inputs (NaN, ±inf, or numbers beyond float32's range) in session and
        /// sidecar requests: refused with 422 naming the value (`.reject`, the default: one
        /// NaN would poison the session's state for every later step), or passed on.
        public var nanPolicy: Model.NaNPolicy = .reject
        /// Bearer tokens: when any is set, every route but the health probes (`/healthz`,
        /// `/readyz`) needs `Authorization: Bearer <one of them>`, else 401.
        public var apiKeys: [String] = []
        public init() {}
    }

    /// One request's model work, queued in the scheduler.
    public struct Job: @unchecked Sendable {
        enum Work {
            case decode(windows: [(neurons: [Int], bins: [Int], values: [Int])])
            case stream(id: String, neurons: [Int], bins: [Int], values: [Int])
            case session(id: String, x: [Float], reset: Bool, step: Int?)
            case sidecar(id: String, layer: Int, h: [Float], time: Int)
            /// `batch` sequences of equal length in `ids`; `nested`: they came as a list of lists.
            case generate(ids: [Int], batch: Int, nested: Bool, newTokens: Int, options: SamplingOptions)
        }
        let work: Work
        let deadline: Double?
        let binary: Bool
        let respond: @Sendable (ServingResponse) -> Void

        /// The state this job changes, if any: no two batches run on it at once.
        var exclusive: String? {
            switch work {
            case .stream(let id, _, _, _): return "stream/" + id
            case .session(let id, _, _, _): return "session/" + id
            case .sidecar(let id, _, _, _): return "sidecar/" + id
            case .decode, .generate: return nil
            }
        }
    }

    public let model: Model
    public let options: Options
    public let metrics = Metrics()
    public let log: ServingLog
    var scheduler: BatchScheduler<Job>!
    let streams = Locked<[String: SpikeStream]>([:])
    let sessions = Locked<[String: RecurrentState]>([:])
    let sessionSteps = Locked<[String: StepRecord]>([:])
    let sidecarSessions = Locked<[String: SidecarSession]>([:])
    private let drainingFlag = Atomic<Bool>(false)

    static let latencyBuckets = [0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1, 2, 5]

    public init(model: Model, options: Options = Options(), log: ServingLog = ServingLog()) throws {
        self.model = model
        self.options = options
        self.log = log
        metrics.declare("cortex_http_requests_total", type: "counter", help: "HTTP requests by route and status code.")
        metrics.declare("cortex_request_duration_seconds", type: "histogram", help: "Time from a request's arrival to its response.",
                        buckets: ServingEngine.latencyBuckets)
        metrics.declare("cortex_batch_size", type: "histogram", help: "Requests per model batch.", buckets: [1, 2, 4, 8, 16, 32, 64, 128])
        metrics.declare("cortex_batch_duration_seconds", type: "histogram", help: "Model time per batch.",
                        buckets: ServingEngine.latencyBuckets)
        metrics.declare("cortex_queue_depth", type: "gauge", help: "Requests waiting for a batch.")
        metrics.declare("cortex_deadline_misses_total", type: "counter", help: "Requests answered after their deadline.")
        metrics.declare("cortex_rejected_total", type: "counter", help: "Requests refused before queueing (queue_full, draining, unauthorized).")
        metrics.declare("cortex_sessions", type: "gauge", help: "Live streams and recurrent sessions.")
        scheduler = try BatchScheduler<Job>(options: options.scheduler) { [unowned self] key, jobs in self.run(key, jobs) }
        scheduler.onBatch = { [metrics] key, size, seconds, _ in
            metrics.observe("cortex_batch_size", [("kind", key)], Double(size))
            metrics.observe("cortex_batch_duration_seconds", [("kind", key)], seconds)
        }
        try scheduler.start()
    }

    public var isReady: Bool { !drainingFlag.load(ordering: .acquiring) }

    /// Stop taking model requests (503), finish every queued one. Returns when done.
    public func drain() {
        drainingFlag.store(true, ordering: .releasing)
        scheduler.drain()
    }

    // MARK: routing

    public func handle(_ request: ServingRequest, respond: @escaping @Sendable (ServingResponse) -> Void) {
        let start = monotonicSeconds()
        let route = ServingEngine.route(of: request.path)
        let finish: @Sendable (ServingResponse) -> Void = { [metrics, log, options] r in
            let seconds = monotonicSeconds() - start
            metrics.increment("cortex_http_requests_total", [("route", route), ("status", String(r.status))])
            metrics.observe("cortex_request_duration_seconds", [("route", route)], seconds)
            if options.logRequests || r.status >= 500 {
                log.write(r.status >= 500 ? "error" : "info", "request", [
                    ("method", .string(request.method)), ("path", .string(request.path)), ("status", .number(Double(r.status))),
                    ("ms", .number((seconds * 1e5).rounded() / 100))])
            }
            respond(r)
        }
        guard authorized(request, route: route) else {
            metrics.increment("cortex_rejected_total", [("reason", "unauthorized")])
            return finish(.error(401, "this server needs an Authorization: Bearer token", headers: [("www-authenticate", "Bearer")]))
        }
        do {
            if let r = try dispatch(request, route: route, finish: finish) { finish(r) }
        } catch let BatchScheduler<Job>.Refusal.overloaded(n) {
            metrics.increment("cortex_rejected_total", [("reason", "queue_full")])
            finish(.error(429, "the queue is full (\(n) requests waiting); retry later", headers: [("retry-after", "1")]))
        } catch BatchScheduler<Job>.Refusal.draining {
            metrics.increment("cortex_rejected_total", [("reason", "draining")])
            finish(.error(503, "the server is shutting down"))
        } catch {
            finish(ServingEngine.response(for: error))
        }
    }

    /// Whether the request may use `route`: always without keys and for the health
    /// probes; else its bearer token must equal a key (compared in constant time, so
    /// response times do not reveal a key's prefix).
    func authorized(_ r: ServingRequest, route: String) -> Bool {
        if options.apiKeys.isEmpty || route == "/healthz" || route == "/readyz" { return true }
        guard let value = r.header("authorization"), value.count > 7,
              value.prefix(7).lowercased() == "bearer " else { return false }
        let token = Array(value.utf8.dropFirst(7))
        var match = false
        for key in options.apiKeys {
            let k = Array(key.utf8)
            var diff: UInt8 = k.count == token.count ? 0 : 1
            for i in 0..<k.count { diff |= k[i] ^ (i < token.count ? token[i] : 0) }
            match = match || diff == 0
        }
        return match
    }

    /// The answer to a failed request (before queueing or in its batch).
    static func response(for error: Error) -> ServingResponse {
        switch error {
        case let e as CortexError: return .error(status(of: e), e.message)
        case let e as StepConflict: return .error(409, e.message)
        case let e as SessionLimit:
            return .error(429, "the session limit (\(e.limit)) is reached: delete sessions or raise --max-sessions",
                          headers: [("retry-after", "1")])
        default: return .error(500, "internal error: \(error)")
        }
    }

    /// The route label of a path (ids replaced, so metrics stay bounded).
    static func route(of path: String) -> String {
        // Exact: "/v1/<kind>/<id>" or "/v1/<kind>/<id>/<action>", no empty component, so
        // "/v1/sessions/a/b/c" or "/v1//sessions/a" match nothing (a DELETE of the first
        // once deleted session "a").
        let parts = path.split(separator: "/", omittingEmptySubsequences: false)
        if parts.count == 4 || parts.count == 5, parts[0].isEmpty, parts[1] == "v1",
           parts[2] == "streams" || parts[2] == "sessions", !parts.dropFirst().contains(where: \.isEmpty) {
            return "/v1/\(parts[2])/{id}" + (parts.count == 5 ? "/\(parts[4])" : "")
        }
        let known = ["/healthz", "/readyz", "/metrics", "/v1/model", "/v1/decode", "/v1/generate"]
        return known.contains(path) ? path : "other"
    }

    static func status(of e: CortexError) -> Int {
        switch e {
        case .parse: return 400
        case .invalidArgument, .shapeMismatch, .dtypeMismatch, .nanInput: return 422
        case .notFound: return 404
        case .unsupported: return 404
        case .busy: return 409
        case .outOfMemory: return 503
        default: return 500
        }
    }

    /// Answer now (a response), or queue model work (nil: `finish` is called later).
    func dispatch(_ r: ServingRequest, route: String, finish: @escaping @Sendable (ServingResponse) -> Void) throws -> ServingResponse? {
        let parts = r.path.split(separator: "/", omittingEmptySubsequences: true).map(String.init)
        func method(_ allowed: String...) throws {
            guard allowed.contains(r.method) else { throw ServingEngine.MethodNotAllowed(allowed: allowed) }
        }
        do {
            switch route {
            case "/healthz":
                try method("GET")
                return .json(200, .object([("status", .string("ok"))]))
            case "/readyz":
                try method("GET")
                return isReady ? .json(200, .object([("ready", .bool(true))]))
                    : .json(503, .object([("ready", .bool(false)), ("reason", .string("draining"))]))
            case "/metrics":
                try method("GET")
                metrics.set("cortex_queue_depth", [], Double(scheduler.depth))
                metrics.set("cortex_sessions", [("kind", "stream")], Double(streams.withLock { $0.count }))
                metrics.set("cortex_sessions", [("kind", "recurrent")], Double(sessions.withLock { $0.count }))
                metrics.set("cortex_sessions", [("kind", "sidecar")], Double(sidecarSessions.withLock { $0.count }))
                return ServingResponse(status: 200, contentType: "text/plain; version=0.0.4", body: Array(metrics.render().utf8))
            case "/v1/model":
                try method("GET")
                return .json(200, model.info)
            case "/v1/decode":
                try method("POST")
                guard model.spikeDecoder != nil else { throw notServed("/v1/decode", "a spike_decoder") }
                let (body, deadline, binary) = try parseBody(r)
                try queue(Job(work: .decode(windows: try windows(body)), deadline: deadline, binary: binary, respond: finish),
                          key: "decode")
                return nil
            case "/v1/streams/{id}":
                guard model.spikeDecoder != nil else { throw notServed("/v1/streams", "a spike_decoder") }
                return try streamResource(r, id: parts[2])
            case "/v1/streams/{id}/step":
                try method("POST")
                guard model.spikeDecoder != nil else { throw notServed("/v1/streams", "a spike_decoder") }
                let id = try sessionID(parts[2])
                let (body, deadline, binary) = try parseBody(r)
                let ev = try events(body, "")
                try queue(Job(work: .stream(id: id, neurons: ev.neurons, bins: ev.bins, values: ev.values),
                              deadline: deadline, binary: binary, respond: finish), key: "stream")
                return nil
            case "/v1/generate":
                try method("POST")
                guard let lm = model.mythos else { throw notServed("/v1/generate", "an open_mythos") }
                let (body, deadline, binary) = try parseBody(r)
                let (ids, batch, nested, n, opts) = try generateInput(body, vocab: lm.config.vocabSize)
                try queue(Job(work: .generate(ids: ids, batch: batch, nested: nested, newTokens: n, options: opts),
                              deadline: deadline, binary: binary, respond: finish), key: "generate")
                return nil
            case "/v1/sessions/{id}/forward":
                try method("POST")
                guard let sc = model.sidecar else { throw notServed("/v1/sessions/{id}/forward", "a cortex_sidecar") }
                let id = try sessionID(parts[2])
                let (body, deadline, binary) = try parseBody(r)
                guard case .json(let j) = body, let layer = j["layer"]?.int, let rows = j["h"]?.array, !rows.isEmpty,
                      rows.count <= 4096 else {
                    throw CortexError.invalidArgument("expected {\"layer\": hooked layer, \"h\": [T][\(sc.dModel)] normalised hidden states (1 <= T <= 4096)}")
                }
                _ = try sc.slot(ofLayer: layer)
                var h: [Float] = []
                for (t, row) in rows.enumerated() {
                    guard let a = row.array, a.count == sc.dModel else { throw CortexError.shapeMismatch("h[\(t)]: expected \(sc.dModel) numbers") }
                    for (i, v) in a.enumerated() {
                        guard let f = v.double else { throw CortexError.invalidArgument("h[\(t)][\(i)]: expected a number") }
                        h.append(Float(f))
                    }
                }
                try checkFinite(h, "h", width: sc.dModel)
                try queue(Job(work: .sidecar(id: id, layer: layer, h: h, time: rows.count), deadline: deadline, binary: binary,
                              respond: finish), key: "sidecar")
                return nil
            case "/v1/sessions/{id}":
                try method("DELETE")
                let recurrent = sessions.withLock { $0.removeValue(forKey: parts[2]) } != nil
                sessionSteps.withLock { _ = $0.removeValue(forKey: parts[2]) }
                let sidecar = sidecarSessions.withLock { $0.removeValue(forKey: parts[2]) } != nil
                let gone = recurrent || sidecar
                return gone ? ServingResponse(status: 204, body: []) : .error(404, "no session '\(parts[2])'")
            case "/v1/sessions/{id}/step":
                try method("POST")
                guard model.spikeDecoder == nil, model.mythos == nil, model.sidecar == nil else {
                    throw notServed("/v1/sessions", "a recurrent stack")
                }
                let id = try sessionID(parts[2])
                let (body, deadline, binary) = try parseBody(r)
                let (x, reset) = try sessionInput(body)
                var step: Int? = nil
                if case .json(let j) = body, let s = j["step"] {
                    guard let k = s.int, k >= 0 else { throw CortexError.invalidArgument("step: expected an integer >= 0") }
                    step = k
                }
                try queue(Job(work: .session(id: id, x: x, reset: reset, step: step), deadline: deadline,
                              binary: binary, respond: finish), key: "session")
                return nil
            default:
                return .error(404, "no route \(r.method) \(r.path)")
            }
        } catch let e as MethodNotAllowed {
            return .error(405, "\(r.method) is not allowed on \(r.path) (allowed: \(e.allowed.joined(separator: ", ")))",
                          headers: [("allow", e.allowed.joined(separator: ", "))])
        } catch let e as BodyTooLarge {
            return .error(413, "the body has \(e.bytes) bytes; at most \(options.maxBodyBytes)")
        }
    }

    struct MethodNotAllowed: Error { let allowed: [String] }
    struct BodyTooLarge: Error { let bytes: Int }

    func notServed(_ path: String, _ kind: String) -> CortexError {
        .unsupported("\(path) needs \(kind) model; this server holds a '\(model.architecture)' model")
    }

    func queue(_ job: Job, key: String) throws {
        guard isReady else { throw BatchScheduler<Job>.Refusal.draining }
        try scheduler.submit(job, key: key, deadline: job.deadline, exclusive: job.exclusive)
    }

    func sessionID(_ s: String) throws -> String {
        guard (1...128).contains(s.utf8.count), s.utf8.allSatisfy({ $0 > 32 && $0 < 127 }) else {
            throw CortexError.invalidArgument("a session id is 1-128 printable ASCII characters")
        }
        return s
    }

    // MARK: bodies

    /// A parsed body: JSON or tensors.
    enum Body {
        case json(JSON)
        case tensors(TensorBody)
    }

    func parseBody(_ r: ServingRequest) throws -> (Body, Double?, Bool) {
        guard r.body.count <= options.maxBodyBytes else { throw BodyTooLarge(bytes: r.body.count) }
        let binaryOut = r.header("accept")?.contains(TensorBody.contentType) ?? false
        var deadlineMs: Double? = nil
        if let h = r.header("x-deadline-ms") {
            guard let v = Double(h), v.isFinite, v >= 0 else { throw CortexError.parse("X-Deadline-Ms: '\(h)' is not a number of milliseconds >= 0") }
            deadlineMs = v
        }
        let body: Body
        if r.header("content-type")?.hasPrefix(TensorBody.contentType) ?? false {
            body = .tensors(try TensorBody.parse(r.body))
        } else {
            let j: JSON
            do { j = try JSON.parse(r.body) } catch let e as CortexError { throw CortexError.parse("body: \(e.message)") }
            guard j.objectPairs != nil else { throw CortexError.parse("body: expected a JSON object") }
            if let d = j["deadline_ms"] {
                guard let v = d.double, v.isFinite, v >= 0 else { throw CortexError.invalidArgument("deadline_ms must be a number >= 0") }
                deadlineMs = v
            }
            body = .json(j)
        }
        return (body, deadlineMs.map { monotonicSeconds() + $0 / 1000 }, binaryOut)
    }

    /// Integer array field of a JSON object, exactly integral.
    func intArray(_ j: JSON, _ key: String, _ context: String) throws -> [Int] {
        guard let a = j[key]?.array else { throw CortexError.invalidArgument("\(context)\(key): expected an array of integers") }
        guard a.count <= options.maxEventsPerRequest else {
            throw CortexError.invalidArgument("\(context)\(key): \(a.count) events; at most \(options.maxEventsPerRequest) per request")
        }
        return try a.enumerated().map { i, v in
            guard let n = v.int else { throw CortexError.invalidArgument("\(context)\(key)[\(i)]: expected an integer") }
            return n
        }
    }

    func events(_ body: Body, _ context: String) throws -> (neurons: [Int], bins: [Int], values: [Int]) {
        switch body {
        case .json(let j): return try events(json: j, context)
        case .tensors(let t):
            func col(_ name: String) throws -> [Int] {
                guard let e = t[name] else { throw CortexError.invalidArgument("tensor body: '\(name)' is missing") }
                guard e.shape.count == 1 else { throw CortexError.shapeMismatch("\(name): expected a 1-D tensor, got shape \(e.shape)") }
                guard e.count <= options.maxEventsPerRequest else {
                    throw CortexError.invalidArgument("\(name): \(e.count) events; at most \(options.maxEventsPerRequest) per request")
                }
                return try e.integers(name)
            }
            return (try col("neuron_ids"), try col("time_bins"), try col("values"))
        }
    }

    func events(json j: JSON, _ context: String) throws -> (neurons: [Int], bins: [Int], values: [Int]) {
        // Lengths and ranges are the decoder's and the stream's to check (SpikeDecoder.checkEvents).
        (try intArray(j, "neuron_ids", context), try intArray(j, "time_bins", context), try intArray(j, "values", context))
    }

    /// /v1/decode: `{"requests": [{neuron_ids, time_bins, values}, ...]}` or one window at
    /// the top level; tensors: neuron_ids, time_bins, values [E] and optional offsets [B+1].
    func windows(_ body: Body) throws -> [(neurons: [Int], bins: [Int], values: [Int])] {
        guard let dec = model.spikeDecoder else { throw notServed("/v1/decode", "a spike_decoder") }
        var out: [(neurons: [Int], bins: [Int], values: [Int])] = []
        switch body {
        case .json(let j):
            if let list = j["requests"] {
                guard let a = list.array, !a.isEmpty, a.count <= 1024 else {
                    throw CortexError.invalidArgument("requests: expected an array of 1-1024 windows")
                }
                for (i, w) in a.enumerated() {
                    guard w.objectPairs != nil else { throw CortexError.invalidArgument("requests[\(i)]: expected an object") }
                    out.append(try events(json: w, "requests[\(i)]."))
                }
            } else {
                out.append(try events(json: j, ""))
            }
        case .tensors(let t):
            let all = try events(body, "")
            // The three columns must agree before they are cut into windows.
            _ = try dec.validate(neurons: all.neurons, timeBins: all.bins, values: all.values, offsets: [0, all.neurons.count])
            var offsets = [0, all.neurons.count]
            if let o = t["offsets"] {
                guard o.shape.count == 1, o.count >= 2, o.count <= 1025 else {
                    throw CortexError.shapeMismatch("offsets: expected a 1-D tensor of 2-1025 entries")
                }
                offsets = try o.integers("offsets")
            }
            guard offsets.first == 0, offsets.last == all.neurons.count, zip(offsets, offsets.dropFirst()).allSatisfy({ $0 <= $1 }) else {
                throw CortexError.invalidArgument("offsets must start at 0, end at the event count \(all.neurons.count) and never decrease")
            }
            for (a, b) in zip(offsets, offsets.dropFirst()) {
                out.append((Array(all.neurons[a..<b]), Array(all.bins[a..<b]), Array(all.values[a..<b])))
            }
        }
        guard out.reduce(0, { $0 + $1.neurons.count }) <= options.maxEventsPerRequest else {
            throw CortexError.invalidArgument("more than \(options.maxEventsPerRequest) events in one request")
        }
        // Checked now, so a bad window is this request's 422, not its batch's.
        for (i, w) in out.enumerated() {
            do { _ = try dec.validate(neurons: w.neurons, timeBins: w.bins, values: w.values, offsets: [0, w.neurons.count]) } catch let e as CortexError {
                throw out.count > 1 ? e.prefixed("requests[\(i)]") : e
            }
        }
        return out
    }

    /// /v1/generate: {"ids": [...] or [[...], ...], "max_new_tokens", "n_loops", "temperature", "top_k",
    /// "seed", "eos_token"}. `ids` is one sequence, or B sequences of one length (as
    /// `generate(ids [B, T])` in the bindings). Returns (ids, B, nested, new tokens, options).
    func generateInput(_ body: Body, vocab: Int) throws -> ([Int], Int, Bool, Int, SamplingOptions) {
        guard case .json(let j) = body else { throw CortexError.invalidArgument("/v1/generate takes a JSON body") }
        let nested = j["ids"]?.array?.first?.array != nil
        var ids: [Int] = [], batch = 1
        if nested {
            let rows = j["ids"]?.array ?? []
            batch = rows.count
            var length = -1
            for (b, row) in rows.enumerated() {
                let r = try intArray(.object([("ids", row)]), "ids", "")
                guard length < 0 || r.count == length else {
                    throw CortexError.invalidArgument("ids[\(b)]: \(r.count) tokens, ids[0] has \(length): the sequences must have one length")
                }
                length = r.count
                ids += r
            }
            guard ids.count <= options.maxEventsPerRequest else {
                throw CortexError.invalidArgument("ids: \(ids.count) tokens; at most \(options.maxEventsPerRequest) per request")
            }
        } else {
            ids = try intArray(j, "ids", "")
        }
        guard !ids.isEmpty else { throw CortexError.invalidArgument("ids: expected at least one token") }
        if let i = ids.firstIndex(where: { $0 < 0 || $0 >= vocab }) {
            let at = nested ? "ids[\(i / (ids.count / batch))][\(i % (ids.count / batch))]" : "ids[\(i)]"
            throw CortexError.invalidArgument("\(at) = \(ids[i]) is outside [0, \(vocab)) (vocab_size)")
        }
        func int(_ k: String, _ d: Int, _ range: ClosedRange<Int>) throws -> Int {
            guard let v = j[k] else { return d }
            guard let n = v.int, range.contains(n) else { throw CortexError.invalidArgument("\(k): expected an integer in \(range)") }
            return n
        }
        var o = SamplingOptions()
        let n = try int("max_new_tokens", 16, 1...4096)
        if j["n_loops"] != nil { o.loops = try int("n_loops", 1, 1...1024) }
        if let t = j["temperature"] {
            guard let v = t.double, v >= 0, v.isFinite else { throw CortexError.invalidArgument("temperature: expected a number >= 0") }
            o.temperature = Float(v)
        }
        o.topK = try int("top_k", 0, 0...1 << 20)
        o.seed = UInt64(try int("seed", 0, 0...Int(Int32.max)))
        if j["eos_token"] != nil { o.eosToken = try int("eos_token", 0, 0...(vocab - 1)) }
        return (ids, batch, nested, n, o)
    }

    func sessionInput(_ body: Body) throws -> ([Float], Bool) {
        let d = model.inputSize
        var x: [Float], reset = false
        switch body {
        case .json(let j):
            guard let a = j["x"]?.array else { throw CortexError.invalidArgument("x: expected an array of \(d) numbers") }
            x = try a.enumerated().map { i, v in
                guard let f = v.double else { throw CortexError.invalidArgument("x[\(i)]: expected a number") }
                return Float(f)
            }
            if let r = j["reset"] {
                guard let b = r.bool else { throw CortexError.invalidArgument("reset: expected true or false") }
                reset = b
            }
        case .tensors(let t):
            guard let e = t["x"], e.dtype == .float32 else { throw CortexError.invalidArgument("tensor body: 'x' (float32) is missing") }
            x = e.floats
            if let r = t["reset"] { reset = (try r.integers("reset")).contains { $0 != 0 } }
        }
        guard x.count == d else { throw CortexError.shapeMismatch("x: expected \(d) values, got \(x.count)") }
        try checkFinite(x, "x")
        return (x, reset)
    }

    /// The input policy: under `.reject` (the server's or the model's) the first value that
    /// is not a finite float32 is refused, named.
    func checkFinite(_ v: [Float], _ name: String, width: Int = 0) throws {
        let policy: Model.NaNPolicy = options.nanPolicy == .reject ? .reject : model.nanPolicy
        try v.withUnsafeBufferPointer { p in
            guard let base = p.baseAddress else { return }
            try policy.check(base, count: p.count, name: name, width: width)
        }
    }

    func streamResource(_ r: ServingRequest, id raw: String) throws -> ServingResponse {
        let id = try sessionID(raw)
        switch r.method {
        case "DELETE":
            let gone = streams.withLock { $0.removeValue(forKey: id) } != nil
            return gone ? ServingResponse(status: 204, body: []) : .error(404, "no stream '\(id)'")
        case "POST":
            guard let dec = model.spikeDecoder else { throw notServed("/v1/streams", "a spike_decoder") }
            guard r.body.count <= options.maxBodyBytes else { throw BodyTooLarge(bytes: r.body.count) }
            let j = r.body.isEmpty ? JSON.object([]) : try JSON.parse(r.body)
            func opt(_ k: String, _ d: Int) throws -> Int {
                guard let v = j[k] else { return d }
                guard let n = v.int else { throw CortexError.invalidArgument("\(k): expected an integer") }
                return n
            }
            let s = try SpikeStream(decoder: dec, windowBins: try opt("window_bins", 120), strideBins: try opt("stride_bins", 10),
                                    maxWindowEvents: try opt("max_window_events", 8192))
            try streams.withLock { m in
                guard m[id] == nil else { throw CortexError.invalidArgument("stream '\(id)' exists (DELETE it first)") }
                guard m.count < options.maxSessions else { throw SessionLimit(limit: options.maxSessions) }
                m[id] = s
            }
            return .json(201, .object([("id", .string(id)), ("window_bins", .number(Double(s.windowBins))),
                                       ("stride_bins", .number(Double(s.strideBins))),
                                       ("max_window_events", .number(Double(s.maxWindowEvents)))]))
        default:
            throw MethodNotAllowed(allowed: ["POST", "DELETE"])
        }
    }

    struct SessionLimit: Error { let limit: Int }
    /// A step index that is neither the next step nor a repeat of the last one (409).
    struct StepConflict: Error { let message: String }

    /// Per recurrent session: steps applied, and the last step's input and output, so a
    /// retried step (same index, same input) is answered from memory, not applied twice.
    struct StepRecord { var done = 0; var lastX: [Float] = []; var lastY: [Float] = [] }

    /// The session `id` of `registry`, made by `make` on first use (refused past
    /// --max-sessions). Streams, recurrent and sidecar sessions all come through here.
    func session<S>(_ registry: Locked<[String: S]>, _ id: String, make: () throws -> S) throws -> S {
        try registry.withLock { m in
            if let s = m[id] { return s }
            guard m.count < options.maxSessions else { throw SessionLimit(limit: options.maxSessions) }
            let s = try make()
            m[id] = s
            return s
        }
    }

    // MARK: running batches (the scheduler's worker threads)

    func respond(_ job: Job, _ result: Result<(JSON, [(String, shape: [Int], values: [Float])]), Error>) {
        switch result {
        case .success(let (json, tensors)):
            let missed = job.deadline.map { monotonicSeconds() > $0 } ?? false
            if missed { metrics.increment("cortex_deadline_misses_total") }
            let headers = [("x-deadline-missed", missed ? "1" : "0")]
            if job.binary {
                job.respond(ServingResponse(status: 200, contentType: TensorBody.contentType, body: TensorBody.encode(tensors),
                                            headers: headers))
            } else {
                var pairs = json.objectPairs ?? []
                pairs.append(("deadline_missed", .bool(missed)))
                job.respond(.json(200, .object(pairs), headers: headers))
            }
        case .failure(let e):
            job.respond(ServingEngine.response(for: e))
        }
    }

    func run(_ key: String, _ jobs: [Job]) {
        switch key {
        case "decode": runDecode(jobs)
        case "stream": runRounds(jobs, runStreams)
        case "session": runRounds(jobs, runSessions)
        default: for job in jobs { runAlone(job) }   // generation, sidecar forwards: one request at a time
        }
    }

    /// Requests that do not batch across clients: OpenMythos generation (prompts of
    /// different lengths) and sidecar forwards (one session's tokens).
    func runAlone(_ job: Job) {
        do {
            switch job.work {
            case .generate(let ids, let batch, let nested, let n, let options):
                let gen = try MythosGenerator(model: model, prompt: ids, batch: batch, options: options)
                let steps = try gen.generate(maxNewTokens: n)
                // Per sequence, up to and including its EOS (the generator repeats EOS in
                // rows that stopped while others go on; the binary body keeps [B, steps]).
                let rows = (0..<batch).map { b -> [Int] in
                    let row = steps.map { $0[b] }
                    guard let eos = options.eosToken, let i = row.firstIndex(of: eos) else { return row }
                    return Array(row[...i])
                }
                let tokens: JSON = nested ? .array(rows.map { .array($0.map { .number(Double($0)) }) })
                    : .array(rows[0].map { .number(Double($0)) })
                respond(job, .success((.object([("tokens", tokens)]),
                                       [("tokens", nested ? [batch, steps.count] : [steps.count],
                                         (0..<batch).flatMap { b in steps.map { Float($0[b]) } })])))
            case .sidecar(let id, let layer, let h, let T):
                let s = try session(sidecarSessions, id) { try SidecarSession(model: model, batch: 1, id: id) }
                let D = model.sidecar?.dModel ?? 0
                var y = [Float](repeating: 0, count: T * D)
                try h.withUnsafeBufferPointer { hp in
                    try y.withUnsafeMutableBufferPointer { yp in
                        try s.forward(layer: layer, h: hp.baseAddress!, time: T, signals: nil, into: yp.baseAddress!)
                    }
                }
                let rows = (0..<T).map { ServingEngine.vectorJSON(y[($0 * D)..<(($0 + 1) * D)]) }
                respond(job, .success((.object([("y", .array(rows))]), [("y", [T, D], y)])))
            default:
                respond(job, .failure(CortexError.internal("a batched request reached the single-request path")))
            }
        } catch {
            respond(job, .failure(error))
        }
    }

    static func vectorJSON(_ v: ArraySlice<Float>) -> JSON { .array(v.map { .number(Double($0)) }) }

    func runDecode(_ jobs: [Job]) {
        guard let dec = model.spikeDecoder else { return }
        var n: [Int] = [], t: [Int] = [], v: [Int] = [], offsets = [0]
        for job in jobs {
            guard case .decode(let windows) = job.work else { continue }
            for w in windows {
                n += w.neurons; t += w.bins; v += w.values
                offsets.append(n.count)
            }
        }
        do {
            let y = try dec.decode(neurons: n, timeBins: t, values: v, offsets: offsets).toArray()
            let k = dec.config.behaviorDim
            var row = 0
            for job in jobs {
                guard case .decode(let windows) = job.work else { continue }
                let mine = Array(y[(row * k)..<((row + windows.count) * k)])
                let json = JSON.object([("velocity", .array((0..<windows.count).map { ServingEngine.vectorJSON(mine[($0 * k)..<(($0 + 1) * k)]) }))])
                respond(job, .success((json, [("velocity", [windows.count, k], mine)])))
                row += windows.count
            }
        } catch {
            for job in jobs { respond(job, .failure(error)) }
        }
    }

    /// Split a batch into rounds in which each stream/session appears once (a client
    /// may pipeline several steps of one session), keeping each session's order.
    func runRounds(_ jobs: [Job], _ body: ([Job]) -> Void) {
        var rest = jobs
        while !rest.isEmpty {
            var seen = Set<String>(), round: [Job] = [], later: [Job] = []
            for j in rest {
                let id: String
                switch j.work {
                case .stream(let s, _, _, _), .session(let s, _, _, _), .sidecar(let s, _, _, _): id = s
                case .decode, .generate: id = ""
                }
                if seen.insert(id).inserted { round.append(j) } else { later.append(j) }
            }
            body(round)
            rest = later
        }
    }

    func runStreams(_ jobs: [Job]) {
        var ready: [(Job, SpikeStream, (neurons: [Int], bins: [Int], values: [Int]))] = []
        for job in jobs {
            guard case .stream(let id, let n, let b, let v) = job.work, let dec = model.spikeDecoder else { continue }
            do {
                let s = try session(streams, id) { try SpikeStream(decoder: dec) }
                _ = try s.validate(neurons: n, bins: b, values: v)
                ready.append((job, s, (n, b, v)))
            } catch { respond(job, .failure(error)) }
        }
        guard !ready.isEmpty, let dec = model.spikeDecoder else { return }
        do {
            let y = try SpikeStream.step(ready.map(\.1), events: ready.map(\.2)).toArray()
            let k = dec.config.behaviorDim
            for (i, (job, s, _)) in ready.enumerated() {
                let row = Array(y[(i * k)..<((i + 1) * k)])
                respond(job, .success((.object([("velocity", ServingEngine.vectorJSON(row[...])), ("bins", .number(Double(s.endBin)))]),
                                       [("velocity", [k], row)])))
            }
        } catch {
            for (job, _, _) in ready { respond(job, .failure(error)) }
        }
    }

    /// Recurrent sessions, one batch: the sessions' states (batch 1 each) advance one
    /// step together as lanes of one batch (Model.forward(lanes:)). Two steps of one
    /// session in the same batch run in order, in two rounds.
    func runSessions(_ jobs: [Job]) {
        var ready: [(Job, RecurrentState, [Float], Bool)] = []
        for job in jobs {
            guard case .session(let id, let x, let reset, _) = job.work else { continue }
            do {
                let s = try session(sessions, id) { try model.makeState(batch: 1) }
                ready.append((job, s, x, reset))
            } catch { respond(job, .failure(error)) }
        }
        while !ready.isEmpty {
            var round: [(Job, RecurrentState, [Float], Bool)] = [], later: [(Job, RecurrentState, [Float], Bool)] = []
            for r in ready { if round.contains(where: { $0.1 === r.1 }) { later.append(r) } else { round.append(r) } }
            runSessionRound(round.filter { applies($0.0) })
            ready = later
        }
    }

    /// Whether a step job is to be applied: no index, or the next one. A repeat of the last
    /// step with the same input is answered from memory; anything else gets 409.
    private func applies(_ job: Job) -> Bool {
        guard case .session(let id, let x, _, let step?) = job.work else { return true }
        let rec = sessionSteps.withLock { $0[id] } ?? StepRecord()
        if step == rec.done { return true }
        if step == rec.done - 1 && x == rec.lastX {
            respond(job, .success((.object([("y", ServingEngine.vectorJSON(rec.lastY[...])), ("repeated", .bool(true))]),
                                   [("y", [rec.lastY.count], rec.lastY)])))
        } else {
            let why = step == rec.done - 1 ? "step \(step) was applied with another input" : "step \(step) is out of order"
            respond(job, .failure(StepConflict(message: "\(why); the session expects step \(rec.done)")))
        }
        return false
    }

    private func runSessionRound(_ ready: [(Job, RecurrentState, [Float], Bool)]) {
        guard !ready.isEmpty else { return }
        let B = ready.count, din = model.inputSize, dout = model.outputSize
        do {
            let x = try Tensor(zeros: [B, din])
            for (b, r) in ready.enumerated() { r.2.withUnsafeBufferPointer { (x.data + b * din).update(from: $0.baseAddress!, count: din) } }
            let out = try model.forward(lanes: ready.map(\.1), x: x, resets: ready.map(\.3)).toArray()
            for (b, r) in ready.enumerated() {
                let row = Array(out[(b * dout)..<((b + 1) * dout)])
                if case .session(let id, _, _, _) = r.0.work {
                    sessionSteps.withLock { m in
                        var rec = m[id] ?? StepRecord()
                        rec.done += 1
                        rec.lastX = r.2
                        rec.lastY = row
                        m[id] = rec
                    }
                }
                respond(r.0, .success((.object([("y", ServingEngine.vectorJSON(row[...]))]), [("y", [dout], row)])))
            }
        } catch {
            for r in ready { respond(r.0, .failure(error)) }
        }
    }
}

/// Structured logs: one JSON object per line on stderr (`ts` in seconds since the epoch).
public struct ServingLog: Sendable {
    public let enabled: Bool
    public init(enabled: Bool = true) { self.enabled = enabled }

    public func write(_ level: String, _ event: String, _ fields: [(String, JSON)] = []) {
        guard enabled else { return }
        var t = timespec()
        clock_gettime(CLOCK_REALTIME, &t)
        let ts = Double(t.tv_sec) + Double(t.tv_nsec / 1_000_000) / 1000
        let line = JSON.object([("ts", .number(ts)), ("level", .string(level)), ("event", .string(event))] + fields).serialized + "\n"
        let bytes = Array(line.utf8)
        _ = bytes.withUnsafeBytes { Glibc.write(2, $0.baseAddress, $0.count) }   // one write: lines never interleave
    }
}
