import Foundation
import HTTPTypes
import Hummingbird
import HummingbirdCore
import KeywayCore
import Logging

/// Marks responses that carry user data or a token as never to be stored by a
/// browser or a shared cache (RFC 9111 §5.2.2.5; RFC 6749 §5.1 asks it of
/// token responses, with `Pragma: no-cache` for HTTP/1.0 caches).
struct NoStoreMiddleware<Context: RequestContext>: RouterMiddleware {
    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        var response = try await next(request, context)
        Self.mark(&response)
        return response
    }

    static func mark(_ response: inout Response) {
        response.headers[.cacheControl] = "no-store"
        response.headers[.pragma] = "no-cache"
    }
}
