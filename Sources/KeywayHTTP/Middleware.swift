import Foundation
import HTTPTypes
import Hummingbird
import HummingbirdCore
import KeywayCore
import Logging

extension HTTPField.Name {
    static let xRequestID = Self("x-request-id")!
    static let xAPIVersion = Self("x-api-version")!
    static let pragma = Self("pragma")!
}

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

/// Resolves the API version from the path (`/2023-12/…`) or `x-api-version`,
/// refusing versions this server does not know, and names it in the response.
struct APIVersionMiddleware: RouterMiddleware {
    typealias Context = KeywayRequestContext

    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        var context = context
        let pathVersion = try Self.versionInPath(request.uri.path)
        // Present means named: an empty or padded value is refused like any unknown version.
        if let header = request.headers[.xAPIVersion] {
            guard let headerVersion = APIVersion(rawValue: header) else { throw Self.unsupported(header) }
            if let pathVersion, pathVersion != headerVersion {
                throw KeywayError(
                    .unsupportedAPIVersion,
                    "The path asks for API version \(pathVersion.rawValue) but x-api-version says \(header); send one or make them agree."
                )
            }
            context.apiVersion = headerVersion
        } else {
            context.apiVersion = pathVersion ?? .current
        }
        var response = try await next(request, context)
        response.headers[.xAPIVersion] = context.apiVersion.rawValue
        return response
    }

    /// The version named by a leading `/YYYY-MM/` segment, if any.
    static func versionInPath(_ path: String) throws -> APIVersion? {
        // Runs on every request, so it looks at bytes and allocates only for a path that names a version.
        let segment = path.utf8.dropFirst().prefix { $0 != UInt8(ascii: "/") }
        let isDigit = { (byte: UInt8) in (UInt8(ascii: "0")...UInt8(ascii: "9")).contains(byte) }
        guard segment.count == 7 else { return nil }
        for (offset, byte) in segment.enumerated() {
            guard offset == 4 ? byte == UInt8(ascii: "-") : isDigit(byte) else { return nil }
        }
        let name = String(Substring(segment))
        guard APIVersion.pathVersions.contains(name), let version = APIVersion(rawValue: name) else { throw unsupported(name) }
        return version
    }

    static func unsupported(_ version: String) -> KeywayError {
        let printable = String(version.unicodeScalars.prefix(32).filter { $0.isASCII && !$0.properties.isWhitespace }.map(Character.init))
        return KeywayError(
            .unsupportedAPIVersion,
            "API version '\(printable)' is not supported. Use one of: \(APIVersion.supported.map(\.rawValue).joined(separator: ", ")).",
            details: ["supportedVersions": APIVersion.supported.map(\.rawValue).joined(separator: ",")]
        )
    }
}

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
