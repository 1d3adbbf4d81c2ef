import Foundation
import HTTPTypes
import Hummingbird
import HummingbirdCore
import KeywayCore
import Logging

/// One log line per request with method, route, status and duration.
///
/// Hummingbird's own request logger prints the whole URI; this one prints the
/// path only, because a query string may carry a key someone pasted there.
struct RequestLogMiddleware: RouterMiddleware {
    typealias Context = KeywayRequestContext

    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        let start = ContinuousClock.now
        let response = try await next(request, context)
        Self.log(
            request.method,
            path: request.uri.path,
            route: context.endpointPath ?? "-",
            status: response.status,
            duration: ContinuousClock.now - start,
            to: context.logger
        )
        return response
    }

    /// The line, for the router's answers and ``ForwardAuthLane``'s alike.
    static func log(
        _ method: HTTPRequest.Method,
        path: String,
        route: String,
        status: HTTPResponse.Status,
        duration: Duration,
        to logger: Logger
    ) {
        let level: Logger.Level = status.code >= 500 ? .error : .debug
        guard logger.logLevel <= level else { return }
        logger.log(
            level: level,
            "request",
            metadata: [
                "http.method": .string(method.rawValue),
                "http.path": .string(path),
                "http.route": .string(route),
                "http.status": .stringConvertible(status.code),
                "duration.ms": .stringConvertible(duration.milliseconds),
            ]
        )
    }
}

extension Duration {
    var milliseconds: Double {
        Double(components.seconds) * 1000 + Double(components.attoseconds) / 1e15
    }
}
