import Foundation
import HTTPTypes
import Hummingbird
import HummingbirdCore
import KeywayCore
import Logging

/// Gives every request an id: a sane incoming `x-request-id` is kept, so a
/// customer can follow one request through their logs and ours.
struct RequestIDMiddleware: RouterMiddleware {
    typealias Context = KeywayRequestContext

    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        var context = context
        if let incoming = request.headers[.xRequestID], Self.isSane(incoming) {
            context.requestID = incoming
            context.logger[metadataKey: "request.id"] = .string(incoming)
        } else {
            // Hummingbird's own id is already in the logger's metadata as hb.request.id.
            context.requestID = context.id
        }
        var response = try await next(request, context)
        response.headers[.xRequestID] = context.requestID
        return response
    }

    /// At most 128 characters of letters, digits, `-`, `_`, `.` and `:`,
    /// so an id can never inject anything into a log or a header.
    static func isSane(_ id: String) -> Bool {
        !id.isEmpty && id.utf8.count <= 128
            && id.utf8.allSatisfy { byte in
                switch byte {
                case UInt8(ascii: "a")...UInt8(ascii: "z"), UInt8(ascii: "A")...UInt8(ascii: "Z"), UInt8(ascii: "0")...UInt8(ascii: "9"),
                    UInt8(ascii: "-"), UInt8(ascii: "_"), UInt8(ascii: "."), UInt8(ascii: ":"):
                    true
                default: false
                }
            }
    }
}
