import Foundation
import HTTPTypes

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// An IPv4 or IPv6 address as its bytes (4 or 16). IPv4-mapped IPv6 addresses
/// (`::ffff:192.0.2.1`, as a dual-stack socket reports IPv4 peers) are IPv4.
struct IPAddress: Hashable, Sendable, CustomStringConvertible {
    let bytes: [UInt8]

    init?(_ text: some StringProtocol) {
        var buffer = [UInt8](repeating: 0, count: 16)
        let string = String(text)
        if inet_pton(AF_INET, string, &buffer) == 1 {
            bytes = Array(buffer.prefix(4))
        } else if inet_pton(AF_INET6, string, &buffer) == 1 {
            let mapped: [UInt8] = [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xFF, 0xFF]
            bytes = buffer.starts(with: mapped) ? Array(buffer.suffix(4)) : buffer
        } else {
            return nil
        }
    }

    private init(bytes: [UInt8]) { self.bytes = bytes }

    var isIPv4: Bool { bytes.count == 4 }

    /// The key a client is throttled by: the address for IPv4, its /64 for IPv6,
    /// because one subscriber usually holds a whole /64 and can change address within it at will.
    var throttleKey: String {
        isIPv4 ? description : IPAddress(bytes: Array(bytes.prefix(8)) + Array(repeating: 0, count: 8)).description + "/64"
    }

    var description: String {
        var buffer = [CChar](repeating: 0, count: Int(INET6_ADDRSTRLEN))
        let family = isIPv4 ? AF_INET : AF_INET6
        guard inet_ntop(family, bytes, &buffer, socklen_t(buffer.count)) != nil else { return "invalid" }
        return String(decoding: buffer.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }
}

/// An address or a CIDR range (`10.0.0.0/8`, `2001:db8::/32`).
struct IPRange: Hashable, Sendable {
    let address: IPAddress
    let prefixLength: Int

    /// Parses `address` or `address/prefix`.
    init?(_ text: some StringProtocol) {
        let parts = text.split(separator: "/", maxSplits: 1, omittingEmptySubsequences: false)
        guard let address = IPAddress(parts[0]) else { return nil }
        // A mapped IPv6 range (::ffff:10.0.0.0/104) covers the IPv4 addresses it maps.
        let mappedIPv6 = address.isIPv4 && parts[0].contains(":")
        let written = mappedIPv6 ? 128 : address.bytes.count * 8
        var length = written
        if parts.count == 2 {
            guard let parsed = Int(parts[1]), (0...written).contains(parsed) else { return nil }
            length = parsed
        }
        if mappedIPv6 {
            guard length >= 96 else { return nil }
            length -= 96
        }
        prefixLength = length
        self.address = address
    }

    func contains(_ candidate: IPAddress) -> Bool {
        guard candidate.bytes.count == address.bytes.count else { return false }
        var remaining = prefixLength
        for (mine, theirs) in zip(address.bytes, candidate.bytes) where remaining > 0 {
            let bits = min(8, remaining)
            let mask = UInt8(truncatingIfNeeded: 0xFF << (8 - bits))
            if mine & mask != theirs & mask { return false }
            remaining -= bits
        }
        return true
    }
}

/// Which peers are reverse proxies whose forwarding header is believed, and
/// which header they set (`KEYWAY_TRUSTED_PROXIES`, `KEYWAY_CLIENT_ADDRESS_HEADER`).
public struct TrustedProxies: Sendable, Equatable {
    /// The header a trusted proxy sets; the other one is never read, since a
    /// client could send it through a proxy that leaves it alone.
    public enum Header: String, Sendable, Equatable, CaseIterable {
        case xForwardedFor = "x-forwarded-for"
        case forwarded
    }

    let ranges: [IPRange]
    public let header: Header

    /// No proxy is trusted: the TCP peer is the client.
    public static let direct = TrustedProxies(ranges: [], header: .xForwardedFor)

    init(ranges: [IPRange], header: Header) {
        self.ranges = ranges
        self.header = header
    }

    /// Parses a comma-separated list of addresses and CIDR ranges.
    /// - Returns: The proxies, or the first entry that is neither.
    static func parse(_ list: String, header: Header) -> Result<TrustedProxies, InvalidEntry> {
        var ranges: [IPRange] = []
        for item in list.split(separator: ",") {
            let entry = item.trimmingCharacters(in: .whitespaces)
            guard !entry.isEmpty else { continue }
            guard let range = IPRange(entry) else { return .failure(InvalidEntry(entry: entry)) }
            ranges.append(range)
        }
        return .success(TrustedProxies(ranges: ranges, header: header))
    }

    struct InvalidEntry: Error {
        let entry: String
    }

    func trusts(_ address: IPAddress) -> Bool {
        ranges.contains { $0.contains(address) }
    }

    /// The client's throttling key: the TCP peer's address, or, only when the
    /// peer is a trusted proxy, the rightmost hop of the forwarding header that
    /// is not a trusted proxy (hops to its left were written by the client and
    /// prove nothing). IPv6 clients are keyed by their /64.
    /// - Parameters:
    ///   - peer: The TCP peer's address as text; `nil` when the transport has none.
    ///   - headers: The request's headers.
    func clientKey(peer: String?, headers: HTTPFields) -> String {
        clientAddress(peer: peer, headers: headers)?.throttleKey ?? "unknown"
    }

    /// The client's address, chosen as ``clientKey(peer:headers:)`` chooses it (whole, for the
    /// audit log); `nil` when the transport has none.
    func clientAddress(peer: String?, headers: HTTPFields) -> IPAddress? {
        guard let peer, let peerAddress = IPAddress(peer) else { return nil }
        guard trusts(peerAddress) else { return peerAddress }
        let hops = forwardedHops(headers)
        var client = peerAddress
        for hop in hops.reversed() {
            // An unreadable hop is the client's doing (a trusted proxy writes addresses): stop at the last good one.
            guard let address = IPAddress(hop) else { break }
            client = address
            if !trusts(address) { break }
        }
        return client
    }

    /// The addresses the chosen header lists, leftmost first, across repeated header lines.
    private func forwardedHops(_ headers: HTTPFields) -> [Substring] {
        switch header {
        case .xForwardedFor:
            return headers[values: HTTPField.Name("X-Forwarded-For")!].flatMap { line in
                line.split(separator: ",").map { Self.stripPort($0.trimmingCharacters(in: .whitespaces)[...]) }
            }
        case .forwarded:
            // RFC 7239: elements separated by commas, pairs by semicolons; `for=` names the client of each hop.
            return headers[values: HTTPField.Name("Forwarded")!].flatMap { line in
                line.split(separator: ",").map { element -> Substring in
                    let pairs = element.split(separator: ";").map { $0.trimmingCharacters(in: .whitespaces) }
                    guard let pair = pairs.first(where: { $0.lowercased().hasPrefix("for=") }) else { return "" }
                    var value = pair.dropFirst(4)
                    if value.hasPrefix("\""), value.hasSuffix("\""), value.count >= 2 { value = value.dropFirst().dropLast() }
                    return Self.stripPort(value)
                }
            }
        }
    }

    /// `[2001:db8::1]:4711` → `2001:db8::1`; `192.0.2.1:80` → `192.0.2.1`; a bare IPv6 address is left alone.
    private static func stripPort(_ hop: Substring) -> Substring {
        if hop.hasPrefix("["), let close = hop.firstIndex(of: "]") { return hop[hop.index(after: hop.startIndex)..<close] }
        if hop.filter({ $0 == ":" }).count == 1, let colon = hop.firstIndex(of: ":") { return hop[..<colon] }
        return hop
    }
}
