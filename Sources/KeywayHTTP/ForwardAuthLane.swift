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

/// Answers a proxy's `/auth` sub-request on the connection's event loop, without entering the
/// router, when memory alone decides it (``ForwardAuthController/answerFromMemory(to:requestID:)``):
/// a key this process holds as active, no user context, no body, a connection that stays open.
/// Every other request, and every part of it, goes on to the router unchanged.
///
/// Why: through nginx each request is one sub-request, and Hummingbird's way to a handler (an
/// async sequence, a task hop there and back, the middleware chain) cost more than deciding.
/// What a client gets is the same either way: the lane answers with the controller's own
/// answer plus what the router's middleware adds to it (`x-request-id`, `Date`, `Server`, the
/// request metrics), and a test sends the same requests to a server with the lane and one
/// without and compares the answers.
///
/// It sits after Hummingbird's connection-state handler, which therefore sees these requests
/// and answers as it sees the router's (idle timeout, graceful shutdown). Pipelined requests are
/// answered in order: while the router has a request of this connection to answer, every later
/// one goes to the router too, which answers them one after another.
final class ForwardAuthLane: ChannelDuplexHandler, RemovableChannelHandler {
    typealias InboundIn = HTTPRequestPart
    typealias InboundOut = HTTPRequestPart
    typealias OutboundIn = HTTPResponsePart
    typealias OutboundOut = HTTPResponsePart

    private let answerer: ForwardAuthLaneAnswerer
    /// The answer to the request whose end is still to come.
    private var pending: (head: HTTPResponse, body: ByteBuffer?)?
    /// Requests passed to the router whose answers have not been written yet.
    private var routerRequests = 0

    init(_ answerer: ForwardAuthLaneAnswerer) {
        self.answerer = answerer
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch unwrapInboundIn(data) {
        case .head(let request):
            // Asked only when nothing is ahead of it (an answer counts against the key's limit) and
            // answers can go out: from a client that stops reading them, the router's wait and so
            // stop the connection's reads, where the lane's would pile up in memory without end.
            if routerRequests == 0, context.channel.isWritable, let answer = answerer.answer(request) {
                pending = answer
                return
            }
            routerRequests += 1
            context.fireChannelRead(data)
        case .body:
            // A request with a body is the router's (``ForwardAuthLaneAnswerer/answer(_:)``).
            if pending == nil { context.fireChannelRead(data) }
        case .end:
            guard let (head, body) = pending else {
                context.fireChannelRead(data)
                return
            }
            pending = nil
            context.write(wrapOutboundOut(.head(head)), promise: nil)
            if let body { context.write(wrapOutboundOut(.body(body)), promise: nil) }
            context.writeAndFlush(wrapOutboundOut(.end(nil)), promise: nil)
        }
    }

    /// The router's answers, on their way out.
    func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        if case .end = unwrapOutboundIn(data) { routerRequests = max(0, routerRequests - 1) }
        context.write(data, promise: promise)
    }
}

/// What ``ForwardAuthLane`` answers, shared by every connection of a listener.
struct ForwardAuthLaneAnswerer: Sendable {
    let controller: ForwardAuthController
    let finishing: LaneFinishing

    /// The response to `request`, or `nil` when it is the router's to answer.
    func answer(_ request: HTTPRequest) -> (head: HTTPResponse, body: ByteBuffer?)? {
        let started = ContinuousClock.now
        // What the router treats apart: a body (read and dropped), `Connection` other than
        // keep-alive (Hummingbird closes after `close`), `Expect`.
        guard request.headerFields[.contentLength] ?? "0" == "0", request.headerFields[.transferEncoding] == nil,
            request.headerFields[values: .connection].allSatisfy({ $0.lowercased() == "keep-alive" }),
            request.headerFields[.expect] == nil,
            let path = request.path, let route = ForwardAuthController.laneRoute(path)
        else { return nil }
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
