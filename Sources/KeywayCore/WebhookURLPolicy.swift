public import Foundation

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Which webhook URLs Keyway sends to: the guard against server-side request forgery.
///
/// An endpoint must be `https` and its host must resolve only to public addresses — never
/// loopback, private, shared (CGNAT), link-local (cloud metadata at 169.254.169.254),
/// multicast or reserved ones — checked when it is saved and again before every delivery.
/// `KEYWAY_WEBHOOK_ALLOW_INSECURE=1` lifts the address check and allows `http`, but only to
/// loopback, for development.
public struct WebhookURLPolicy: Sendable {
    /// Resolves a host to its addresses (4 or 16 bytes each).
    public typealias Resolver = @Sendable (_ host: String) async throws -> [[UInt8]]

    public var allowInsecure: Bool
    public var resolve: Resolver

    public init(allowInsecure: Bool, resolve: @escaping Resolver = WebhookURLPolicy.systemResolve) {
        self.allowInsecure = allowInsecure
        self.resolve = resolve
    }

    /// The longest URL accepted.
    public static let longestURL = 2048

    /// Checks `text` as an endpoint URL and the addresses its host has now.
    /// - Returns: The URL as it will be stored and called.
    /// - Throws: ``KeywayError`` `invalid_input` (field `url`) saying what is wrong.
    ///
    /// The message never says what a name resolved to, nor tells a name that does not resolve
    /// from one that resolves to a private address: a tenant must not map Keyway's network.
    @discardableResult
    public func check(_ text: String) async throws -> URL {
        let url = try Self.parse(text)
        let host = url.host ?? ""
        let notPublic = Self.refused("The host '\(host)' must resolve to public addresses only.")
        guard let addresses = try? await resolve(host), !addresses.isEmpty else { throw notPublic }
        if url.scheme == "http" {
            guard allowInsecure else { throw Self.refused("The URL must be https.") }
            guard addresses.allSatisfy(Self.isLoopback) else {
                throw Self.refused("http is allowed only to loopback (KEYWAY_WEBHOOK_ALLOW_INSECURE=1); use https.")
            }
            return url
        }
        if !allowInsecure, !addresses.allSatisfy(Self.isPublic) { throw notPublic }
        return url
    }

    /// The URL's shape alone: http(s), a host, no user or password, not too long.
    /// - Returns: The URL with its scheme in lowercase (`HTTP://` is http, not https).
    public static func parse(_ text: String) throws -> URL {
        guard text.utf8.count <= longestURL else { throw refused("The URL is longer than \(longestURL) characters.") }
        guard var components = URLComponents(string: text), let scheme = components.scheme?.lowercased(),
            scheme == "https" || scheme == "http"
        else {
            throw refused("Give an https URL, such as https://example.com/webhooks.")
        }
        components.scheme = scheme
        guard let url = components.url else { throw refused("Give an https URL, such as https://example.com/webhooks.") }
        guard let host = url.host, !host.isEmpty else { throw refused("The URL has no host.") }
        guard url.user == nil, url.password == nil else { throw refused("The URL must not carry a user or password.") }
        guard url.fragment == nil else { throw refused("The URL must not have a fragment (#…).") }
        return url
    }

    private static func refused(_ message: String) -> KeywayError {
        KeywayError.invalidInput(field: "url", message)
    }

    /// Whether an address may receive webhooks without `KEYWAY_WEBHOOK_ALLOW_INSECURE`.
    public static func isPublic(_ address: [UInt8]) -> Bool {
        if address.count == 4 { return isPublicIPv4(address) }
        guard address.count == 16 else { return false }
        // IPv4-mapped (::ffff:a.b.c.d) and NAT64 (64:ff9b::a.b.c.d) reach an IPv4 address.
        if address[0..<10].allSatisfy({ $0 == 0 }) && address[10] == 0xFF && address[11] == 0xFF {
            return isPublicIPv4(Array(address[12...]))
        }
        if address[0..<12] == [0x00, 0x64, 0xFF, 0x9B, 0, 0, 0, 0, 0, 0, 0, 0] { return isPublicIPv4(Array(address[12...])) }
        if address.allSatisfy({ $0 == 0 }) { return false }  // ::
        if address[0..<15].allSatisfy({ $0 == 0 }) && address[15] == 1 { return false }  // ::1
        if address[0] & 0xFE == 0xFC { return false }  // fc00::/7 unique local (AWS metadata fd00:ec2::254 too)
        if address[0] == 0xFE && address[1] & 0xC0 == 0x80 { return false }  // fe80::/10 link-local
        if address[0] == 0xFF { return false }  // multicast
        if address[0] == 0x20 && address[1] == 0x01 && address[2] == 0x0D && address[3] == 0xB8 { return false }  // documentation
        return true
    }

    private static func isPublicIPv4(_ a: [UInt8]) -> Bool {
        switch (a[0], a[1]) {
        case (0, _), (10, _), (127, _): return false  // "this network", private, loopback
        case (100, 64...127): return false  // shared address space (CGNAT)
        case (169, 254): return false  // link-local, cloud metadata
        case (172, 16...31), (192, 168): return false  // private
        case (192, 0) where a[2] == 0 || a[2] == 2: return false  // IETF protocol assignments, documentation
        case (198, 18...19): return false  // benchmarking
        case (198, 51) where a[2] == 100, (203, 0) where a[2] == 113: return false  // documentation
        case (224...255, _): return false  // multicast, reserved, broadcast
        default: return true
        }
    }

    /// Whether an address is loopback (127.0.0.0/8, ::1, or IPv4-mapped loopback).
    public static func isLoopback(_ address: [UInt8]) -> Bool {
        if address.count == 4 { return address[0] == 127 }
        guard address.count == 16 else { return false }
        if address[0..<15].allSatisfy({ $0 == 0 }) && address[15] == 1 { return true }
        return address[0..<10].allSatisfy { $0 == 0 } && address[10] == 0xFF && address[11] == 0xFF && address[12] == 127
    }

    /// An address as text, for test messages (refusals never show one).
    static func format(_ address: [UInt8]) -> String {
        if address.count == 4 { return address.map(String.init).joined(separator: ".") }
        return stride(from: 0, to: address.count, by: 2).map { String(UInt16(address[$0]) << 8 | UInt16(address[$0 + 1]), radix: 16) }
            .joined(separator: ":")
    }

    /// The system resolver (`getaddrinfo`), run off the caller's thread: it blocks.
    public static let systemResolve: Resolver = { host in
        try await withCheckedThrowingContinuation { continuation in
            DispatchQueue.global().async {
                continuation.resume(with: Result { try getAddresses(host) })
            }
        }
    }

    private struct ResolutionFailed: Error {}

    private static func getAddresses(_ host: String) throws -> [[UInt8]] {
        // A bracketed IPv6 literal, as URL.host may keep it.
        let name = host.hasPrefix("[") && host.hasSuffix("]") ? String(host.dropFirst().dropLast()) : host
        var hints = addrinfo()
        hints.ai_family = AF_UNSPEC
        #if canImport(Glibc)
        hints.ai_socktype = Int32(SOCK_STREAM.rawValue)
        #else
        hints.ai_socktype = SOCK_STREAM
        #endif
        var list: UnsafeMutablePointer<addrinfo>?
        guard getaddrinfo(name, nil, &hints, &list) == 0, let first = list else { throw ResolutionFailed() }
        defer { freeaddrinfo(first) }
        var addresses: [[UInt8]] = []
        var cursor: UnsafeMutablePointer<addrinfo>? = first
        while let info = cursor {
            if let address = info.pointee.ai_addr {
                switch Int32(info.pointee.ai_family) {
                case AF_INET:
                    address.withMemoryRebound(to: sockaddr_in.self, capacity: 1) { pointer in
                        var value = pointer.pointee.sin_addr
                        addresses.append(withUnsafeBytes(of: &value) { Array($0) })
                    }
                case AF_INET6:
                    address.withMemoryRebound(to: sockaddr_in6.self, capacity: 1) { pointer in
                        var value = pointer.pointee.sin6_addr
                        addresses.append(withUnsafeBytes(of: &value) { Array($0) })
                    }
                default: break
                }
            }
            cursor = info.pointee.ai_next
        }
        return addresses
    }
}
