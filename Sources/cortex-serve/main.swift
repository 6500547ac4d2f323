// cortex-serve: serve one Cortex model directory over HTTP/1.1 (SwiftNIO).
//
//   cortex-serve --model DIR [--host 127.0.0.1] [--port 8080] [--max-batch 32]
//                [--max-wait-ms 0] [--max-queue 1024] [--max-sessions 4096]
//                [--max-body-mb 8] [--int8] [--threads N] [--workers N] [--nan-policy reject]
//                [--idle-timeout-s 30] [--request-timeout-s 60] [--drain-timeout-s 30]
//                [--api-key KEY | --api-key-file PATH] [--check-weights] [--log-requests]
//
// --idle-timeout-s: a connection that sends nothing for this long, in the middle of a
// request (a body shorter than its Content-Length, a slow client) or between requests,
// is closed; counted in cortex_idle_timeouts_total. A request being computed is not
// idle time: the answer is still written.
// --request-timeout-s: a request's head and body must arrive within this long of its
// first byte (a client trickling a byte at a time is not idle); else 408 and close,
// counted in cortex_request_timeouts_total.
// --drain-timeout-s: at SIGTERM, how long requests still arriving may take to finish
// arriving; each is answered (503 for model work: the engine is draining).
// --api-key / --api-key-file (one key per line; repeatable): every route but /healthz
// and /readyz needs "Authorization: Bearer <key>", else 401.
// Bodies over 64 KB are parsed off the event loop, at most --threads / 2 at a time.
//
// --threads: Cortex's thread pool (default: the CPUs this process may use). --workers:
// scheduler threads running batches side by side (default: one per 4 of those threads),
// so a long generation occupies one worker, not the server; concurrent batches share
// the pool.
//
// The HTTP layer only frames requests: routing, batching, sessions and metrics are
// Cortex's ServingEngine (Sources/CortexServing). SIGTERM/SIGINT drain: the listener
// closes, /readyz turns 503, every queued request is answered, then the process exits 0.
import Cortex
import CortexServing
import Dispatch
import NIOCore
import NIOHTTP1
import NIOPosix

#if canImport(Glibc)
import Glibc
#endif

struct Arguments {
    var model = ""
    var host = "127.0.0.1"
    var port = 8080
    var engine = ServingEngine.Options()
    var int8 = false
    var threads: Int? = nil
    var workers: Int? = nil
    var idleTimeout = 30      // seconds a connection may send nothing (mid-request or between requests)
    var requestTimeout = 60   // seconds a request may take to arrive whole
    var drainTimeout = 30     // seconds shutdown waits for requests still arriving
    var checkWeights = false

    static let usage = """
        usage: cortex-serve --model DIR [--host 127.0.0.1] [--port 8080] [--max-batch 32] [--max-wait-ms 0]
                            [--max-queue 1024] [--max-sessions 4096] [--max-body-mb 8] [--int8] [--threads N]
                            [--workers N] [--nan-policy reject|propagate] [--idle-timeout-s 30]
                            [--request-timeout-s 60] [--drain-timeout-s 30] [--api-key KEY] [--api-key-file PATH]
                            [--check-weights] [--log-requests]
        """

    /// A bearer token: printable ASCII without spaces (what the header can carry).
    static func apiKey(_ key: String, from source: String) throws -> String {
        guard !key.isEmpty, key.allSatisfy({ $0.isASCII && !$0.isWhitespace && !$0.isNewline && ($0.asciiValue ?? 0) >= 0x21 }) else {
            throw CortexError.invalidArgument("\(source): a key must be non-empty printable ASCII without spaces")
        }
        return key
    }

    init(_ argv: [String]) throws {
        var i = 0
        func value() throws -> String {
            i += 1
            guard i < argv.count else { throw CortexError.invalidArgument("\(argv[i - 1]) needs a value") }
            return argv[i]
        }
        func int(_ name: String, _ range: ClosedRange<Int>) throws -> Int {
            let v = try value()
            guard let n = Int(v), range.contains(n) else { throw CortexError.invalidArgument("\(name) must be an integer in \(range), got '\(v)'") }
            return n
        }
        while i < argv.count {
            switch argv[i] {
            case "--model": model = try value()
            case "--host": host = try value()
            case "--port": port = try int("--port", 0...65535)
            case "--max-batch": engine.scheduler.maxBatch = try int("--max-batch", 1...1024)
            case "--max-wait-ms":
                let v = try value()
                guard let d = Double(v), d >= 0, d <= 1000 else { throw CortexError.invalidArgument("--max-wait-ms must be in [0, 1000]") }
                engine.scheduler.maxWait = d / 1000
            case "--max-queue": engine.scheduler.maxQueue = try int("--max-queue", 1...1_000_000)
            case "--max-sessions": engine.maxSessions = try int("--max-sessions", 1...10_000_000)
            case "--max-body-mb": engine.maxBodyBytes = try int("--max-body-mb", 1...1024) << 20
            case "--int8": int8 = true
            case "--threads": threads = try int("--threads", 1...512)
            case "--workers": workers = try int("--workers", 1...256)
            case "--idle-timeout-s": idleTimeout = try int("--idle-timeout-s", 1...86_400)
            case "--request-timeout-s": requestTimeout = try int("--request-timeout-s", 1...86_400)
            case "--drain-timeout-s": drainTimeout = try int("--drain-timeout-s", 0...86_400)
            case "--check-weights": checkWeights = true
            case "--api-key":
                engine.apiKeys.append(try Arguments.apiKey(try value(), from: "--api-key"))
            case "--api-key-file":
                // One key per line; blank lines and surrounding spaces are ignored.
                let path = try value()
                let text = String(decoding: try FileIO.read(path, limit: 1 << 20), as: UTF8.self)
                let keys = try text.split(whereSeparator: \.isNewline)
                    .map { String($0.drop(while: \.isWhitespace).reversed().drop(while: \.isWhitespace).reversed()) }
                    .filter { !$0.isEmpty }.map { try Arguments.apiKey($0, from: path) }
                guard !keys.isEmpty else { throw CortexError.invalidArgument("--api-key-file \(path) holds no key") }
                engine.apiKeys += keys
            case "--log-requests": engine.logRequests = true
            case "--nan-policy":
                switch try value() {
                case "reject": engine.nanPolicy = .reject
                case "propagate": engine.nanPolicy = .propagate
                case let v: throw CortexError.invalidArgument("--nan-policy must be reject or propagate, got '\(v)'")
                }
            case "-h", "--help": print(Arguments.usage); exit(0)
            default: throw CortexError.invalidArgument("unknown option '\(argv[i])'")
            }
            i += 1
        }
        guard !model.isEmpty else { throw CortexError.invalidArgument("--model DIR is required") }
    }
}

/// Collects one request (head + body, bounded), hands it to the engine (large bodies
/// off the event loop), writes the answer.
final class HTTPHandler: ChannelInboundHandler, @unchecked Sendable {
    typealias InboundIn = HTTPServerRequestPart
    typealias OutboundOut = HTTPServerResponsePart

    let engine: ServingEngine
    let decoders: BodyDecoders
    let connection: ConnectionState
    let timer: RequestTimer
    var head: HTTPRequestHead?
    var body: ByteBuffer?
    var tooLarge = false
    /// The client has half-closed (shutdown(SHUT_WR) after its request), or its next
    /// request timed out: it still gets every pending answer, then the connection closes.
    var inputClosed = false

    init(engine: ServingEngine, decoders: BodyDecoders, connection: ConnectionState, timer: RequestTimer) {
        self.engine = engine
        self.decoders = decoders
        self.connection = connection
        self.timer = timer
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch unwrapInboundIn(data) {
        case .head(let h):
            head = h
            body = context.channel.allocator.buffer(capacity: 0)
            tooLarge = false
        case .body(var chunk):
            if tooLarge { return }
            if (body?.readableBytes ?? 0) + chunk.readableBytes > engine.options.maxBodyBytes {
                tooLarge = true
                body = nil
                return
            }
            body?.writeBuffer(&chunk)
        case .end:
            guard let h = head else { return }
            head = nil
            connection.unanswered += 1
            timer.requestComplete()
            let keepAlive = h.isKeepAlive && !tooLarge
            if tooLarge {
                answer(context, ServingResponse(status: 413, body: Array("{\"error\":\"the body is larger than \(engine.options.maxBodyBytes) bytes\",\"status\":413}\n".utf8)), version: h.version, keepAlive: false)
                return
            }
            let bytes = body.map { Array($0.readableBytesView) } ?? []
            body = nil
            var path = h.uri
            if let q = path.firstIndex(of: "?") { path = String(path[..<q]) }
            let request = ServingRequest(method: h.method.rawValue, path: path,
                                         headers: h.headers.map { ($0.name.lowercased(), $0.value) }, body: bytes)
            let loop = context.eventLoop
            let bound = NIOLoopBound(context, eventLoop: loop)
            let handler = NIOLoopBound(self, eventLoop: loop)
            let engine = engine
            let work: @Sendable () -> Void = {
                engine.handle(request) { response in
                    loop.execute {
                        let me = handler.value
                        me.answer(bound.value, response, version: h.version, keepAlive: keepAlive && !me.inputClosed)
                    }
                }
            }
            if bytes.count <= BodyDecoders.inlineBytes {
                work()
            } else if !decoders.run(work) {
                engine.metrics.increment("cortex_rejected_total", [("reason", "decoders_busy")])
                answer(context, ServingResponse(status: 503, body: Array("{\"error\":\"too many large bodies are waiting to be parsed; retry later\",\"status\":503}\n".utf8),
                                                headers: [("retry-after", "1")]), version: h.version, keepAlive: keepAlive)
            }
        }
    }

    /// Write one request's answer and account for it.
    func answer(_ context: ChannelHandlerContext, _ r: ServingResponse, version: HTTPVersion, keepAlive: Bool) {
        connection.unanswered = max(0, connection.unanswered - 1)
        connection.update()
        write(context, r, version: version, keepAlive: keepAlive)
    }

    /// The request now arriving took longer than --request-timeout-s: count it; with
    /// answers pending, close after the last (else `RequestTimer` answers 408).
    func requestTimedOut() -> Bool {
        engine.metrics.increment("cortex_request_timeouts_total")
        head = nil
        body = nil
        if connection.unanswered > 0 { inputClosed = true; return true }
        return false
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if let e = event as? IdleStateHandler.IdleStateEvent, e == .read {
            if connection.unanswered == 0 {
                engine.metrics.increment("cortex_idle_timeouts_total")
                context.close(promise: nil)
            }
            return
        }
        if let e = event as? ChannelEvent, e == .inputClosed {
            inputClosed = true
            if connection.unanswered == 0 { context.close(promise: nil) }  // otherwise the last answer closes
            return
        }
        context.fireUserInboundEventTriggered(event)
    }

    func write(_ context: ChannelHandlerContext, _ r: ServingResponse, version: HTTPVersion, keepAlive: Bool) {
        var headers = HTTPHeaders()
        headers.add(name: "content-type", value: r.contentType)
        headers.add(name: "content-length", value: String(r.body.count))
        for (k, v) in r.headers { headers.add(name: k, value: v) }
        if !keepAlive { headers.add(name: "connection", value: "close") }
        let head = HTTPResponseHead(version: version, status: HTTPResponseStatus(statusCode: r.status), headers: headers)
        context.write(wrapOutboundOut(.head(head)), promise: nil)
        var buffer = context.channel.allocator.buffer(capacity: r.body.count)
        buffer.writeBytes(r.body)
        context.write(wrapOutboundOut(.body(.byteBuffer(buffer))), promise: nil)
        let done = context.writeAndFlushPromise()
        context.writeAndFlush(wrapOutboundOut(.end(nil)), promise: done)
        if !keepAlive { done.futureResult.whenComplete { _ in context.close(promise: nil) } }
    }

    func errorCaught(context: ChannelHandlerContext, error: Error) {
        // Malformed HTTP (NIO's parser refused it): answer 400 if we can, then close.
        if error is HTTPParserError {
            write(context, ServingResponse(status: 400, body: Array("{\"error\":\"malformed HTTP request\",\"status\":400}\n".utf8)),
                  version: .http1_1, keepAlive: false)
        } else {
            context.close(promise: nil)
        }
    }
}

extension ChannelHandlerContext {
    func writeAndFlushPromise() -> EventLoopPromise<Void> { eventLoop.makePromise() }
}

func serve() -> Int32 {
    let log = ServingLog()
    let args: Arguments
    do { args = try Arguments(Array(CommandLine.arguments.dropFirst())) } catch let e as CortexError {
        log.write("error", "arguments", [("message", .string(e.message))])
        fputs(Arguments.usage + "\n", stderr)
        return 2
    } catch { return 2 }
    if let t = args.threads { BLAS.setThreads(t) }
    var options = args.engine
    options.scheduler.workers = args.workers ?? max(1, BLAS.threads / 4)
    let engine: ServingEngine
    do {
        let model = try Model.load(directory: args.model, int8: args.int8, checkWeights: args.checkWeights)
        engine = try ServingEngine(model: model, options: options, log: log)
        engine.metrics.declare("cortex_idle_timeouts_total", type: "counter",
                               help: "Connections closed after --idle-timeout-s without a byte.")
        engine.metrics.declare("cortex_request_timeouts_total", type: "counter",
                               help: "Requests that did not arrive whole within --request-timeout-s (408).")
        log.write("info", "model_loaded", [("model", .string(args.model)), ("architecture", .string(model.architecture)),
                                           ("parameters", .number(Double(model.module.parameterCount))), ("int8", .bool(model.int8))])
    } catch let e as CortexError {
        log.write("error", "model_load_failed", [("model", .string(args.model)), ("message", .string(e.message))])
        return 1
    } catch { return 1 }

    let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
    let inFlight = InFlight()
    let decoders = BodyDecoders(limit: max(1, BLAS.threads / 2))
    let bootstrap = ServerBootstrap(group: group)
        .serverChannelOption(ChannelOptions.backlog, value: 256)
        .serverChannelOption(ChannelOptions.socketOption(.so_reuseaddr), value: 1)
        .childChannelOption(ChannelOptions.socketOption(.tcp_nodelay), value: 1)
        .childChannelOption(ChannelOptions.allowRemoteHalfClosure, value: true)  // answer half-closed clients
        .childChannelInitializer { channel in
            channel.eventLoop.makeCompletedFuture {
                let sync = channel.pipeline.syncOperations
                let connection = ConnectionState(inFlight: inFlight)
                let timer = RequestTimer(limit: .seconds(Int64(args.requestTimeout)), connection: connection)
                let http = HTTPHandler(engine: engine, decoders: decoders, connection: connection, timer: timer)
                timer.onExpiry = { [weak http] in http?.requestTimedOut() ?? false }
                try sync.addHandler(IdleStateHandler(readTimeout: .seconds(Int64(args.idleTimeout))))
                try sync.addHandler(timer)
                try sync.configureHTTPServerPipeline(withErrorHandling: false)
                try sync.addHandler(http)
            }
        }
    let channel: Channel
    do { channel = try bootstrap.bind(host: args.host, port: args.port).wait() } catch {
        log.write("error", "bind_failed", [("host", .string(args.host)), ("port", .number(Double(args.port))), ("message", .string("\(error)"))])
        return 1
    }
    let port = channel.localAddress?.port ?? args.port
    log.write("info", "listening", [("host", .string(args.host)), ("port", .number(Double(port))),
                                    ("max_batch", .number(Double(args.engine.scheduler.maxBatch))),
                                    ("workers", .number(Double(options.scheduler.workers))),
                                    ("threads", .number(Double(BLAS.threads))),
                                    ("max_wait_ms", .number(args.engine.scheduler.maxWait * 1000))])

    // Graceful shutdown on SIGTERM / SIGINT.
    signal(SIGTERM, SIG_IGN)
    signal(SIGINT, SIG_IGN)
    let done = DispatchSemaphore(value: 0)
    var sources: [DispatchSourceSignal] = []
    for sig in [SIGTERM, SIGINT] {
        let s = DispatchSource.makeSignalSource(signal: sig, queue: .global())
        s.setEventHandler { done.signal() }
        s.resume()
        sources.append(s)
    }
    done.wait()
    log.write("info", "draining", [("queued", .number(Double(engine.metrics.value("cortex_queue_depth"))))])
    try? channel.close().wait()          // no new connections
    engine.drain()                       // every queued request answered; new model work gets 503
    // Requests still arriving (an upload in progress) are answered too, within the drain timeout.
    let deadline = monotonicSeconds() + Double(args.drainTimeout)
    while inFlight.value > 0, monotonicSeconds() < deadline { usleep(10_000) }
    if inFlight.value > 0 {
        log.write("warning", "drain_timeout", [("connections", .number(Double(inFlight.value)))])
    }
    usleep(200_000)                      // let the last responses flush
    try? group.syncShutdownGracefully()
    log.write("info", "stopped")
    _ = sources
    return 0
}

exit(serve())
