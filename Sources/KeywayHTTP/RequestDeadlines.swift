import Hummingbird
import HummingbirdCore
import Logging
import NIOCore
import NIOHTTP1

/// Hummingbird's HTTP/1.1 channel with deadlines for a request's head and body.
///
/// Why: Hummingbird's idle timeout only restarts when a whole part arrives, so
/// a client that trickles a body a byte at a time is never idle, and a client
/// that opens a connection and sends half a head holds it for the whole idle
/// timeout. With these deadlines a head must be complete within `headTimeout` of
/// its first byte, and a body within `bodyTimeout` of its head, whatever
/// trickles in meanwhile. A connection waiting for its next request is Hummingbird's
/// idle timeout's to close.
struct DeadlineHTTP1Channel: ServerChildChannel {
    typealias Value = HTTP1Channel.Value

    let base: HTTP1Channel
    let headTimeout: TimeAmount
    let bodyTimeout: TimeAmount
    /// Answer `/auth` and `/keys/verify` on the event loop when memory decides them; `nil` on
    /// listeners without them.
    var lanes: (forwardAuth: ForwardAuthLaneAnswerer, verification: KeyVerificationLaneAnswerer)? = nil

    func setup(channel: any Channel, logger: Logger) -> EventLoopFuture<Value> {
        base.setup(channel: channel, logger: logger).flatMapThrowing { value in
            // On the channel's event loop, before anything is read.
            let deadlines = RequestDeadlines(headTimeout: headTimeout, bodyTimeout: bodyTimeout, logger: logger)
            let pipeline = channel.pipeline.syncOperations
            try pipeline.addHandler(RequestBytesWatcher(deadlines), position: .first)
            let decoder = try pipeline.handler(type: ByteToMessageHandler<HTTPRequestDecoder>.self)
            try pipeline.addHandler(RequestPartsWatcher(deadlines), position: .after(decoder))
            if let lanes {
                // After the connection-state handler, which then sees the lanes' requests and answers.
                let connectionState = try pipeline.handler(type: HTTPConnectionStateHandler.self)
                let forwardAuth = ForwardAuthLane(lanes.forwardAuth)
                try pipeline.addHandler(forwardAuth, position: .after(connectionState))
                try pipeline.addHandler(KeyVerificationLane(lanes.verification), position: .after(forwardAuth))
            }
            return value
        }
    }

    func handle(value: Value, logger: Logger) async {
        await base.handle(value: value, logger: logger)
    }
}

/// A request body did not arrive within `KEYWAY_REQUEST_BODY_TIMEOUT_SECONDS` of its head.
struct RequestBodyTimeout: Error {}

/// The deadline of one connection's current request. Used on the connection's event loop only.
final class RequestDeadlines {
    private enum Phase {
        /// Between requests: Hummingbird's idle timeout applies.
        case idle
        case head(until: NIODeadline)
        case body(until: NIODeadline)
    }

    private let headTimeout: TimeAmount
    private let bodyTimeout: TimeAmount
    private let logger: Logger
    private var phase = Phase.idle
    private var timer: Scheduled<Void>?

    init(headTimeout: TimeAmount, bodyTimeout: TimeAmount, logger: Logger) {
        self.headTimeout = headTimeout
        self.bodyTimeout = bodyTimeout
        self.logger = logger
    }

    func bytesArrived() {
        if case .idle = phase { phase = .head(until: .now() + headTimeout) }
    }

    func headArrived() {
        phase = .body(until: .now() + bodyTimeout)
    }

    func endArrived() {
        phase = .idle
        timer?.cancel()
        timer = nil
    }

    /// Called once a read is processed, so a request that arrives whole (most do)
    /// never schedules a timer.
    func armTimer(_ bytes: ChannelHandlerContext) {
        guard timer == nil else { return }
        let deadline: NIODeadline
        switch phase {
        case .idle: return
        case .head(let until), .body(let until): deadline = until
        }
        timer = bytes.eventLoop.assumeIsolated().scheduleTask(deadline: deadline) { [self] in
            timer = nil
            expire(bytes)
        }
    }

    /// The parts watcher's context, from which a body timeout reaches the request's handler.
    var partsContext: ChannelHandlerContext?

    private func expire(_ bytes: ChannelHandlerContext) {
        switch phase {
        case .idle:
            return
        case .head(let until) where until > .now(), .body(let until) where until > .now():
            // The request moved on to a later deadline since this timer was set.
            armTimer(bytes)
        case .head:
            logger.notice("closing a connection: request head not received in time", metadata: ["timeout": "\(headTimeout)"])
            phase = .idle
            // No request was decoded yet, so nothing upstream can answer: say it here.
            let response = "HTTP/1.1 408 Request Timeout\r\nConnection: close\r\nContent-Length: 0\r\n\r\n"
            bytes.writeAndFlush(NIOAny(ByteBuffer(string: response)), promise: nil)
            bytes.close(promise: nil)
        case .body:
            logger.notice("request body not received in time", metadata: ["timeout": "\(bodyTimeout)"])
            phase = .idle
            // The handler reading the body fails with this (a 408), and the connection then closes.
            (partsContext ?? bytes).fireErrorCaught(RequestBodyTimeout())
        }
    }

    func channelClosed() {
        phase = .idle
        timer?.cancel()
        timer = nil
    }
}

/// First in the pipeline: sees a request's first bytes before the decoder does.
final class RequestBytesWatcher: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = ByteBuffer
    typealias InboundOut = ByteBuffer

    private let deadlines: RequestDeadlines

    init(_ deadlines: RequestDeadlines) {
        self.deadlines = deadlines
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        deadlines.bytesArrived()
        context.fireChannelRead(data)
    }

    func channelReadComplete(context: ChannelHandlerContext) {
        // The decoder has handled this read's bytes by now.
        deadlines.armTimer(context)
        context.fireChannelReadComplete()
    }

    func channelInactive(context: ChannelHandlerContext) {
        deadlines.channelClosed()
        context.fireChannelInactive()
    }
}

/// Right after the HTTP decoder: sees each request's head and end.
final class RequestPartsWatcher: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = HTTPServerRequestPart
    typealias InboundOut = HTTPServerRequestPart

    private let deadlines: RequestDeadlines

    init(_ deadlines: RequestDeadlines) {
        self.deadlines = deadlines
    }

    func handlerAdded(context: ChannelHandlerContext) {
        deadlines.partsContext = context
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        deadlines.partsContext = nil
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch unwrapInboundIn(data) {
        case .head: deadlines.headArrived()
        case .body: break
        case .end: deadlines.endArrived()
        }
        context.fireChannelRead(data)
    }
}
