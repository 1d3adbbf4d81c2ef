public import Foundation

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// A browser origin (`scheme://host[:port]`), in the exact form browsers send in `Origin`.
///
/// The only way to make one is from text that passes ``normalized(_:)``, so a store that
/// takes origins as this type cannot be handed an invalid one.
public struct BrowserOrigin: Sendable, Hashable, CustomStringConvertible {
    /// The origin as browsers serialise it: what is stored and compared with `Origin`.
    public let serialized: String

    /// Checks and normalises `raw`; see ``normalized(_:)``.
    /// - Throws: ``KeywayError`` `invalid_input` when `raw` is not an http or https origin.
    public init(_ raw: String) throws(KeywayError) {
        serialized = try Self.normalized(raw)
    }

    public var description: String { serialized }

    /// Normalises an origin to the serialisation browsers send (RFC 6454 §6.1):
    /// lowercase scheme and host, no default port, no trailing slash.
    ///
    /// What is stored is compared byte for byte with the `Origin` header, so
    /// `https://App.example.com:443/` must become `https://app.example.com` or it
    /// would never match.
    /// - Throws: ``KeywayError`` `invalid_input` when `raw` is not an http or https
    ///   origin, or carries what no origin has: credentials, a path, a query, a fragment.
    static func normalized(_ raw: String) throws(KeywayError) -> String {
        let refusal = KeywayError.invalidInput(
            field: "origin",
            "'\(raw)' is not an origin: use scheme://host[:port], e.g. https://app.example.com."
        )
        guard raw.utf8.allSatisfy({ $0 > 0x20 && $0 < 0x7F }), let components = URLComponents(string: raw),
            let scheme = components.scheme?.lowercased(), scheme == "http" || scheme == "https",
            let host = components.host?.lowercased(), !host.isEmpty,
            components.path.isEmpty || components.path == "/", components.query == nil, components.fragment == nil
        else { throw refusal }
        guard components.user == nil, components.password == nil else {
            throw .invalidInput(
                field: "origin",
                "'\(raw)' carries a user name or password; an origin is scheme://host[:port] and browsers never send credentials in one."
            )
        }
        let defaultPort = scheme == "https" ? 443 : 80
        let port = components.port.flatMap { $0 == defaultPort ? nil : $0 }
        let bracketed = host.contains(":") ? "[\(try canonicalIPv6(host, refusal: refusal))]" : host
        return "\(scheme)://\(bracketed)" + (port.map { ":\($0)" } ?? "")
    }

    /// An IPv6 address as browsers write it in an origin: lowercase, the longest run of zero
    /// groups compressed (`[0:0:0:0:0:0:0:1]` is `[::1]`).
    private static func canonicalIPv6(_ host: String, refusal: KeywayError) throws(KeywayError) -> String {
        let address = host.hasPrefix("[") && host.hasSuffix("]") ? String(host.dropFirst().dropLast()) : host
        var bytes = in6_addr()
        var text = [CChar](repeating: 0, count: Int(INET6_ADDRSTRLEN))
        guard inet_pton(AF_INET6, address, &bytes) == 1, inet_ntop(AF_INET6, &bytes, &text, socklen_t(text.count)) != nil else {
            throw refusal
        }
        return String(decoding: text.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }
}
