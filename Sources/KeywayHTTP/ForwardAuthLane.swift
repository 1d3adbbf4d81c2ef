import Foundation
import HTTPTypes
import Hummingbird
import Logging
import Metrics
import NIOCore
import NIOHTTPTypes
import Synchronization

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// What a lane answers from memory (``MemoryLane``): which requests it may take, and the
/// answer to one.
protocol LaneAnswering: Sendable {
    /// The body length of a request this lane may answer, once its body is there (0 for none);
    /// `nil` when it is the router's.
    func bodyLength(_ request: HTTPRequest) -> Int?
    /// The response to `request` with `body`, or `nil`, with nothing counted, when it is the
    /// router's after all.
    func answer(_ request: HTTPRequest, body: ByteBuffer) -> (HTTPResponse, ByteBuffer?)?
}

/// Answers, on the connection's event loop and without entering the router, the requests its
/// answerer decides from memory; every other request goes on to the router, its parts as they
/// came. Keyway has two: ``ForwardAuthLane`` for a proxy's `/auth` sub-request and
/// ``KeyVerificationLane`` for a service's `POST /keys/verify`.
///
/// Why: through nginx each request is one sub-request, and Hummingbird's way to a handler (an
/// async sequence, a task hop there and back, the middleware chain) cost more than deciding.
/// What a client gets is the same either way: the answerers give the controllers' own answers
/// plus what the router's middleware adds (``LaneFinishing``), and tests send the same requests
/// to a server with the lanes and one without and compare the answers.
///
/// A request the answerer may take is held, head and body, until its end; then it is answered,
/// or handed to the router whole. The lanes sit after Hummingbird's connection-state handler,
/// which therefore sees their requests and answers as it sees the router's (idle timeout,
/// graceful shutdown). A lane answers only when nothing is ahead of the request (while the
/// router owes this connection an answer, later requests go to the router too, which answers
/// them in order; and an answer counts against the key's limit) and only while the connection
/// is writable: from a client that stops reading, the router's writes wait and so stop the
/// connection's reads, where a lane's answers would pile up in memory.
final class MemoryLane<Answerer: LaneAnswering>: ChannelDuplexHandler, RemovableChannelHandler {
    typealias InboundIn = HTTPRequestPart
    typealias InboundOut = HTTPRequestPart
    typealias OutboundIn = HTTPResponsePart
    typealias OutboundOut = HTTPResponsePart

    private let answerer: Answerer
    /// The head and body of a request the lane may answer, until its end.
    private var held: (head: HTTPRequest, body: ByteBuffer)?
    /// Requests passed to the router whose answers have not been written yet.
    private var routerRequests = 0

    init(_ answerer: Answerer) {
        self.answerer = answerer
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch unwrapInboundIn(data) {
        case .head(let request):
            if routerRequests == 0, context.channel.isWritable, let length = answerer.bodyLength(request) {
                held = (request, context.channel.allocator.buffer(capacity: length))
                return
            }
            routerRequests += 1
            context.fireChannelRead(data)
        case .body(var part):
            guard held != nil else {
                context.fireChannelRead(data)
                return
            }
            held?.body.writeBuffer(&part)
        case .end(let trailers):
            guard let (head, body) = held else {
                context.fireChannelRead(data)
                return
            }
            held = nil
            if trailers == nil, let (response, answerBody) = answerer.answer(head, body: body) {
                context.write(wrapOutboundOut(.head(response)), promise: nil)
                if let answerBody { context.write(wrapOutboundOut(.body(answerBody)), promise: nil) }
                context.writeAndFlush(wrapOutboundOut(.end(nil)), promise: nil)
                return
            }
            // The router's after all: the request as it came, in one piece.
            routerRequests += 1
            context.fireChannelRead(wrapInboundOut(.head(head)))
            if body.readableBytes > 0 { context.fireChannelRead(wrapInboundOut(.body(body))) }
            context.fireChannelRead(data)
        }
    }

    /// The router's answers, on their way out.
    func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        if case .end = unwrapOutboundIn(data) { routerRequests = max(0, routerRequests - 1) }
        context.write(data, promise: promise)
    }
}

/// A proxy's `/auth` sub-request, answered on the event loop when memory alone decides it
/// (``ForwardAuthController/answerFromMemory(to:requestID:)``): a key this process holds as
/// active, no user context, no body, a connection that stays open.
typealias ForwardAuthLane = MemoryLane<ForwardAuthLaneAnswerer>

/// What ``ForwardAuthLane`` answers, shared by every connection of a listener.
struct ForwardAuthLaneAnswerer: LaneAnswering {
    let controller: ForwardAuthController
    let finishing: LaneFinishing

    /// 0 for a request the lane may answer: what the router treats apart is its own — a body
    /// (read and dropped), `Connection` other than keep-alive (Hummingbird closes after
    /// `close`), `Expect`, a path other than `/auth` or a plain one below it.
    func bodyLength(_ request: HTTPRequest) -> Int? {
        guard request.headerFields[.contentLength] ?? "0" == "0", request.headerFields[.transferEncoding] == nil,
            request.headerFields[values: .connection].allSatisfy({ $0.lowercased() == "keep-alive" }),
            request.headerFields[.expect] == nil,
            let path = request.path, ForwardAuthController.laneRoute(path) != nil
        else { return nil }
        return 0
    }

    func answer(_ request: HTTPRequest, body: ByteBuffer) -> (HTTPResponse, ByteBuffer?)? {
        let started = ContinuousClock.now
        guard body.readableBytes == 0, let path = request.path, let route = ForwardAuthController.laneRoute(path) else { return nil }
        let ids = LaneFinishing.RequestIDs(request)
        guard let answer = controller.answerFromMemory(to: request, requestID: ids.answered) else { return nil }
        var fields = answer.headers
        fields[.contentLength] = String(answer.body?.readableBytes ?? 0)
        let response = finishing.finish(request, path: path, route: route, status: answer.status, fields: fields, ids: ids, started: started)
        return (response, answer.body)
    }
}

extension Duration {
    var nanoseconds: Int64 {
        components.seconds * 1_000_000_000 + components.attoseconds / 1_000_000_000
    }
}

/// The series Hummingbird's `MetricsMiddleware` records a request in, made once per route,
/// method and status: the same labels and dimensions, so a dashboard cannot tell the lane apart.
final class LaneMetrics: Sendable {
    static let shared = LaneMetrics()

    struct Series: Sendable {
        let counter: Counter
        let timer: Metrics.Timer
    }

    private struct Key: Hashable {
        let route: String
        let method: HTTPRequest.Method
        let status: HTTPResponse.Status
    }

    private let series = Mutex<[Key: Series]>([:])

    func metrics(route: String, method: HTTPRequest.Method, status: HTTPResponse.Status) -> Series {
        let key = Key(route: route, method: method, status: status)
        return series.withLock { series in
            if let known = series[key] { return known }
            let dimensions = [
                ("http.route", route), ("http.request.method", method.description),
                ("http.response.status_code", status.code.description),
            ]
            let made = Series(
                counter: Counter(label: "hb.requests", dimensions: dimensions),
                timer: Metrics.Timer(label: "http.server.request.duration", dimensions: dimensions, preferredDisplayUnit: .seconds)
            )
            series[key] = made
            return made
        }
    }
}

/// The `Date` field's value (RFC 9110 §5.6.7, IMF-fixdate), made once a second.
final class HTTPDateField: Sendable {
    static let shared = HTTPDateField()

    private let current = Mutex<(second: time_t, value: String)>((-1, ""))

    func now() -> String {
        let second = time(nil)
        if let value = current.withLock({ $0.second == second ? $0.value : nil }) { return value }
        let value = Self.format(second)
        current.withLock { $0 = (second, value) }
        return value
    }

    static func format(_ second: time_t) -> String {
        var seconds = second
        var parts = tm()
        gmtime_r(&seconds, &parts)
        let days = ["Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"]
        let months = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"]
        func two(_ value: Int32) -> String { value < 10 ? "0\(value)" : "\(value)" }
        return "\(days[Int(parts.tm_wday)]), \(two(parts.tm_mday)) \(months[Int(parts.tm_mon)]) \(parts.tm_year + 1900) "
            + "\(two(parts.tm_hour)):\(two(parts.tm_min)):\(two(parts.tm_sec)) GMT"
    }
}
