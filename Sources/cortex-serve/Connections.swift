// What cortex-serve tracks around the engine so that a slow, large or late request
// cannot stall the event loop or be dropped at shutdown.
import Cortex
import CortexServing
import Dispatch
import NIOCore

/// Runs large-body requests (parsing a multi-megabyte JSON body takes milliseconds to
/// seconds) off the event loop, at most `limit` at a time; up to `maxWaiting` more wait
/// in order (each holds its body), and beyond that `run` refuses. The event loop stays
/// free for every other connection (`/healthz` among them).
final class BodyDecoders: @unchecked Sendable {
    /// Bodies up to this size are handled on the event loop: their parse costs less than a hop.
    static let inlineBytes = 64 << 10

    let limit: Int, maxWaiting: Int
    private let state = Locked<(running: Int, waiting: [@Sendable () -> Void])>((0, []))

    init(limit: Int) {
        self.limit = max(1, limit)
        maxWaiting = 4 * self.limit
    }

    /// Run `work` now or when a decoder frees up; false (not queued) when too many wait.
    func run(_ work: @escaping @Sendable () -> Void) -> Bool {
        let start = state.withLock { s -> Bool? in
            if s.running < limit { s.running += 1; return true }
            guard s.waiting.count < maxWaiting else { return nil }
            s.waiting.append(work)
            return false
        }
        guard let start else { return false }
        if start { launch(work) }
        return true
    }

    private static let queue = DispatchQueue(label: "cortex-serve.body-decode", attributes: .concurrent)

    private func launch(_ work: @escaping @Sendable () -> Void) {
        BodyDecoders.queue.async { [self] in
            work()
            let next = state.withLock { s -> (@Sendable () -> Void)? in
                if s.waiting.isEmpty { s.running -= 1; return nil }
                return s.waiting.removeFirst()
            }
            if let next { launch(next) }
        }
    }
}

/// Connections with a request in progress: from its first byte until its answer is
/// written. Shutdown waits for this to reach zero, so an upload still arriving after
/// SIGTERM is answered (503, the engine is draining) instead of cut off.
final class InFlight: @unchecked Sendable {
    private let count = Locked(0)
    func add(_ d: Int) { count.withLock { $0 += d } }
    var value: Int { count.withLock { $0 } }
}

/// One connection's request bookkeeping, shared by `RequestTimer` (bytes) and
/// `HTTPHandler` (parsed requests); both run on the connection's event loop.
final class ConnectionState {
    let inFlight: InFlight
    /// A request has started arriving and has not fully arrived.
    var receiving = false
    /// Requests handed to the engine and not yet answered.
    var unanswered = 0
    private var busy = false

    init(inFlight: InFlight) { self.inFlight = inFlight }

    /// Keep the shared count in step with this connection's busy state.
    func update() {
        let now = receiving || unanswered > 0
        if now != busy { inFlight.add(now ? 1 : -1); busy = now }
    }
}

/// A request (head and body) must arrive whole within `limit` of its first byte. The
/// idle timeout alone lets a client trickle one byte per interval forever (slowloris).
final class RequestTimer: ChannelInboundHandler {
    typealias InboundIn = ByteBuffer
    typealias InboundOut = ByteBuffer

    let limit: TimeAmount
    let connection: ConnectionState
    /// Called on the event loop when a request has not fully arrived in time. Returns
    /// whether earlier requests still await their answers (then the connection closes
    /// after the last of them; else the timer answers 408 and closes).
    var onExpiry: () -> Bool = { false }
    private var task: Scheduled<Void>?
    private var context: ChannelHandlerContext?

    func handlerAdded(context: ChannelHandlerContext) { self.context = context }
    func handlerRemoved(context: ChannelHandlerContext) { self.context = nil }

    init(limit: TimeAmount, connection: ConnectionState) {
        self.limit = limit
        self.connection = connection
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        // Timed only while no answer is pending: with pipelining, a request that arrived
        // whole waits behind the one being computed, which is never timed out.
        if !connection.receiving && connection.unanswered == 0 {
            connection.receiving = true
            connection.update()
            let me = NIOLoopBound(self, eventLoop: context.eventLoop)
            task = context.eventLoop.scheduleTask(in: limit) {
                me.value.task = nil
                if me.value.connection.receiving { me.value.expire() }
            }
        }
        context.fireChannelRead(data)
    }

    /// Answer 408 below the HTTP codec (no request head may have been parsed, so the
    /// HTTP layer has no request to answer) and close.
    private func expire() {
        guard !onExpiry(), let context else { return }
        let body = "{\"error\":\"the request did not arrive within the request timeout\",\"status\":408}\n"
        let text = "HTTP/1.1 408 Request Timeout\r\ncontent-type: application/json\r\ncontent-length: \(body.utf8.count)\r\n"
            + "connection: close\r\n\r\n" + body
        var buffer = context.channel.allocator.buffer(capacity: text.utf8.count)
        buffer.writeString(text)
        context.writeAndFlush(NIOAny(buffer)).whenComplete { _ in context.close(promise: nil) }
    }

    /// The request being timed has fully arrived.
    func requestComplete() {
        task?.cancel()
        task = nil
        connection.receiving = false
        connection.update()
    }

    func channelInactive(context: ChannelHandlerContext) {
        task?.cancel()
        task = nil
        connection.receiving = false
        connection.unanswered = 0
        connection.update()
        context.fireChannelInactive()
    }
}
