// cortex-serve: serve one Cortex model directory over HTTP/1.1 (SwiftNIO).
//
//   cortex-serve --model DIR [--host 127.0.0.1] [--port 8080] [--max-batch 32]
//                [--max-wait-ms 0] [--max-queue 1024] [--max-sessions 4096]
//                [--max-body-mb 8] [--int8] [--threads N] [--workers N] [--nan-policy reject]
//                [--idle-timeout-s 30] [--log-requests]
//
// --idle-timeout-s: a connection that sends nothing for this long, in the middle of a
// request (a body shorter than its Content-Length, a slow client) or between requests,
// is closed; counted in cortex_idle_timeouts_total. A request being computed is not
// idle time: the answer is still written.
//
// --threads: Cortex's thread pool (default: the CPUs this process may use). --workers:
// scheduler threads running batches side by side (default: one per 4 of those threads),
// so a long generation occupies one worker, not the server; concurrent batches share
// the pool.
//
// The HTTP layer only frames requests: routing, batching, sessions and metrics are
// Cortex's ServingEngine (Sources/Cortex/Serving). SIGTERM/SIGINT drain: the listener
// closes, /readyz turns 503, every queued request is answered, then the process exits 0.
import Cortex
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

    static let usage = """
        usage: cortex-serve --model DIR [--host 127.0.0.1] [--port 8080] [--max-batch 32] [--max-wait-ms 0]
                            [--max-queue 1024] [--max-sessions 4096] [--max-body-mb 8] [--int8] [--threads N]
                            [--workers N] [--nan-policy reject|propagate] [--idle-timeout-s 30] [--log-requests]
        """

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

/// Collects one request (head + body, bounded), hands it to the engine, writes the answer.
final class HTTPHandler: ChannelInboundHandler, @unchecked Sendable {
    typealias InboundIn = HTTPServerRequestPart
    typealias OutboundOut = HTTPServerResponsePart

    let engine: ServingEngine
    var head: HTTPRequestHead?
    var body: ByteBuffer?
    var tooLarge = false
    /// Requests handed to the engine and not yet answered, and whether the client has
    /// half-closed (shutdown(SHUT_WR) after its request): it still gets every answer, then
    /// the connection closes.
    var unanswered = 0
    var inputClosed = false

    init(engine: ServingEngine) { self.engine = engine }

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
            let keepAlive = h.isKeepAlive && !tooLarge
            if tooLarge {
                write(context, ServingResponse(status: 413, body: Array("{\"error\":\"the body is larger than \(engine.options.maxBodyBytes) bytes\",\"status\":413}\n".utf8)), version: h.version, keepAlive: false)
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
            unanswered += 1
            engine.handle(request) { [self] response in
                loop.execute {
                    self.unanswered -= 1
                    self.write(bound.value, response, version: h.version, keepAlive: keepAlive && !self.inputClosed)
                }
            }
        }
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if let e = event as? IdleStateHandler.IdleStateEvent, e == .read {
            if unanswered == 0 {
                engine.metrics.increment("cortex_idle_timeouts_total")
                context.close(promise: nil)
            }
            return
        }
        if let e = event as? ChannelEvent, e == .inputClosed {
            inputClosed = true
            if unanswered == 0 { context.close(promise: nil) }  // otherwise the last answer closes
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
        let model = try Model.load(directory: args.model, int8: args.int8)
        engine = try ServingEngine(model: model, options: options, log: log)
        engine.metrics.declare("cortex_idle_timeouts_total", type: "counter",
                               help: "Connections closed after --idle-timeout-s without a byte.")
        log.write("info", "model_loaded", [("model", .string(args.model)), ("architecture", .string(model.architecture)),
                                           ("parameters", .number(Double(model.module.parameterCount))), ("int8", .bool(model.int8))])
    } catch let e as CortexError {
        log.write("error", "model_load_failed", [("model", .string(args.model)), ("message", .string(e.message))])
        return 1
    } catch { return 1 }

    let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
    let bootstrap = ServerBootstrap(group: group)
        .serverChannelOption(ChannelOptions.backlog, value: 256)
        .serverChannelOption(ChannelOptions.socketOption(.so_reuseaddr), value: 1)
        .childChannelOption(ChannelOptions.socketOption(.tcp_nodelay), value: 1)
        .childChannelOption(ChannelOptions.allowRemoteHalfClosure, value: true)  // answer half-closed clients
        .childChannelInitializer { channel in
            channel.eventLoop.makeCompletedFuture {
                let sync = channel.pipeline.syncOperations
                try sync.addHandler(IdleStateHandler(readTimeout: .seconds(Int64(args.idleTimeout))))
                try sync.configureHTTPServerPipeline(withErrorHandling: false)
                try sync.addHandler(HTTPHandler(engine: engine))
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
    engine.drain()                       // every queued request answered
    usleep(200_000)                      // let the last responses flush
    try? group.syncShutdownGracefully()
    log.write("info", "stopped")
    _ = sources
    return 0
}

exit(serve())
