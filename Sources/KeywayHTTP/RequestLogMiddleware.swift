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
        let level: Logger.Level = response.status.code >= 500 ? .error : .debug
        context.logger.log(
            level: level,
            "request",
            metadata: [
                "http.method": .string(request.method.rawValue),
                "http.path": .string(request.uri.path),
                "http.route": .string(context.endpointPath ?? "-"),
                "http.status": .stringConvertible(response.status.code),
                "duration.ms": .stringConvertible((ContinuousClock.now - start).milliseconds),
            ]
        )
        return response
    }
}

extension Duration {
    var milliseconds: Double {
        Double(components.seconds) * 1000 + Double(components.attoseconds) / 1e15
    }
}
