import Foundation
import HTTPTypes
import Hummingbird
import HummingbirdCore
import KeywayCore
import Logging

/// Resolves the API version from the path (`/2023-12/…`) or `x-api-version`,
/// refusing versions this server does not know, and names it in the response.
struct APIVersionMiddleware: RouterMiddleware {
    typealias Context = KeywayRequestContext

    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        // A proxy forwards its client's headers to /auth: their x-api-version is the upstream's business.
        if ForwardAuthController.isForwardAuth(request.uri.path) { return try await next(request, context) }
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
