import HTTPTypes
import Hummingbird
import Logging
import Metrics
import NIOCore
import NIOHTTPTypes

/// A service's `POST /keys/verify`, answered on the event loop when memory alone decides it
/// (``KeyVerificationController/answerFromMemory(authorization:body:)``): a service token and a
/// key this process holds as active, the usual `{"key": "…"}` body.
typealias KeyVerificationLane = MemoryLane<KeyVerificationLaneAnswerer>

/// What ``KeyVerificationLane`` answers, shared by every connection of a listener.
struct KeyVerificationLaneAnswerer: LaneAnswering {
    let controller: KeyVerificationController
    let finishing: LaneFinishing

    /// The route, in metrics and logs.
    static let route = "/keys/verify"
    /// A `{"key": "…"}` body is about 60 bytes; a longer one is the router's to read.
    static let largestBody = 1024

    /// `Content-Length` of a request the lane may answer, once its body is there; `nil` when it
    /// is the router's: another route, a body of unknown or unusual length, a client's
    /// `x-api-version` (the router checks it), `Connection` other than keep-alive, `Expect`.
    func bodyLength(_ request: HTTPRequest) -> Int? {
        guard request.method == .post, request.path == Self.route, request.headerFields[.xAPIVersion] == nil,
            request.headerFields[.transferEncoding] == nil, request.headerFields[.expect] == nil,
            request.headerFields[values: .connection].allSatisfy({ $0.lowercased() == "keep-alive" }),
            request.headerFields[values: .contentLength].count == 1,
            let length = request.headerFields[.contentLength].flatMap({ Int($0) }), (1...Self.largestBody).contains(length)
        else { return nil }
        return length
    }

    func answer(_ request: HTTPRequest, body: ByteBuffer) -> (HTTPResponse, ByteBuffer?)? {
        let started = ContinuousClock.now
        guard let verdict = controller.answerFromMemory(authorization: request.headerFields[values: .authorization], body: body) else {
            return nil
        }
        let json = verdict.jsonBuffer
        var fields = HTTPFields()
        fields.reserveCapacity(9)
        fields[.contentType] = "application/json; charset=utf-8"
        fields[.contentLength] = String(json.readableBytes)
        fields[.cacheControl] = "no-store"
        fields[.pragma] = "no-cache"
        // APIVersionMiddleware names the version every answer of the API was made by.
        fields[.xAPIVersion] = APIVersion.current.rawValue
        let response = finishing.finish(request, path: Self.route, route: Self.route, status: .ok, fields: fields, started: started)
        return (response, json)
    }
}

/// What the router's middleware and Hummingbird add to every answer, for the lanes:
/// `x-request-id`, `Date`, `Server`, the request metrics and, at debug, the request's log line.
struct LaneFinishing: Sendable {
    /// Hummingbird's `Server` field, as the application names itself.
    let serverName: String?
    /// The application's logger, for the request line ``RequestLogMiddleware`` writes at debug.
    let logger: Logger

    /// `keyway_forward_auth_lane_total`: `/auth` answers given on the event loop rather than by
    /// the router; `keyway_verification_lane_total`: the same for `/keys/verify`.
    static let forwardAuthAnswers = Counter(label: "keyway_forward_auth_lane_total")
    static let verificationAnswers = Counter(label: "keyway_verification_lane_total")

    /// The request id RequestIDMiddleware answers with: a sane one the client sent, or the one
    /// Hummingbird gives every request.
    struct RequestIDs {
        let hummingbird = RequestID()
        let incoming: String?
        var answered: String { incoming ?? hummingbird.description }

        init(_ request: HTTPRequest) {
            incoming = request.headerFields[.xRequestID].flatMap { RequestIDMiddleware.isSane($0) ? $0 : nil }
        }
    }

    func finish(
        _ request: HTTPRequest,
        path: String,
        route: String,
        status: HTTPResponse.Status,
        fields: HTTPFields,
        ids: RequestIDs? = nil,
        started: ContinuousClock.Instant
    ) -> HTTPResponse {
        let ids = ids ?? RequestIDs(request)
        var fields = fields
        fields[.xRequestID] = ids.answered
        fields[.date] = HTTPDateField.shared.now()
        if let serverName { fields[.server] = serverName }
        // What MetricsMiddleware and RequestLogMiddleware record of the router's answers.
        let duration = ContinuousClock.now - started
        let metrics = LaneMetrics.shared.metrics(route: route, method: request.method, status: status)
        metrics.counter.increment()
        metrics.timer.recordNanoseconds(duration.nanoseconds)
        (route == KeyVerificationLaneAnswerer.route ? Self.verificationAnswers : Self.forwardAuthAnswers).increment()
        if logger.logLevel <= .debug {
            var logger = logger
            logger[metadataKey: "hb.request.id"] = .stringConvertible(ids.hummingbird)
            if let incoming = ids.incoming { logger[metadataKey: "request.id"] = .string(incoming) }
            RequestLogMiddleware.log(request.method, path: path, route: route, status: status, duration: duration, to: logger)
        }
        return HTTPResponse(status: status, headerFields: fields)
    }
}
