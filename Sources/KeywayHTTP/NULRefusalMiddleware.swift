import Foundation
import HTTPTypes
import Hummingbird
import HummingbirdCore
import KeywayCore
import Logging

/// Refuses a path or query string that holds U+0000 (`%00`).
///
/// No identifier, username or setting holds one, PostgreSQL's text cannot store
/// one (a query with it fails with `22021`), and C libraries stop reading at one:
/// refusing it once here spares every handler from meeting it.
struct NULRefusalMiddleware<Context: RequestContext>: RouterMiddleware {
    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        guard !Self.holdsNUL(request.uri.description) else {
            throw KeywayError.invalidInput(field: "uri", "The path or query string holds U+0000 (%00), which nothing here accepts.")
        }
        return try await next(request, context)
    }

    /// Whether `uri` holds `%00` or a raw NUL byte.
    static func holdsNUL(_ uri: String) -> Bool {
        var utf8 = uri.utf8.makeIterator()
        var zeros = -1  // -1: not after a `%`; otherwise how many `0`s followed it
        while let byte = utf8.next() {
            if byte == 0 { return true }
            switch (byte, zeros) {
            case (UInt8(ascii: "%"), _): zeros = 0
            case (UInt8(ascii: "0"), 0): zeros = 1
            case (UInt8(ascii: "0"), 1): return true
            default: zeros = -1
            }
        }
        return false
    }
}
