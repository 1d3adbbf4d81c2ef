import Foundation
public import KeywayCore
public import Logging

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Server settings, read from `KEYWAY_*` environment variables.
///
/// Every setting has a default that runs out of the box: `keyway serve` alone
/// listens on 127.0.0.1:8080 with its data in `./keyway-data/keyway.sqlite`.
/// The README's configuration table lists the same variables.
public struct KeywayConfiguration: Sendable, Equatable {
    /// `KEYWAY_HOST`: the address to listen on.
    public var host = "127.0.0.1"
    /// `KEYWAY_PORT`: the TCP port to listen on (0 picks a free one).
    public var port = 8080
    /// `KEYWAY_DATABASE`: the SQLite file.
    public var databasePath = "keyway-data/keyway.sqlite"
    /// `KEYWAY_EGRESS_IPS`: comma-separated addresses (or CIDR ranges) that
    /// Keyway's outbound traffic leaves from, published at `/ip-addresses`.
    public var egressIPs: [String] = []
    /// `KEYWAY_LOG_LEVEL`: trace, debug, info, notice, warning, error or critical.
    public var logLevel: Logger.Level = .info
    /// `KEYWAY_REVOCATION_POLL_MS`: how often to look for keys revoked by other
    /// processes (the CLI, other instances) when no notification channel is up:
    /// always on SQLite, and on PostgreSQL while the LISTEN connection is down.
    /// The bound on how long such a key may still be accepted here.
    public var revocationPollMilliseconds = 250
    /// `KEYWAY_USAGE_FLUSH_SECONDS`: how often keys' last-used times are written.
    public var usageFlushSeconds = 10
    /// `KEYWAY_KEY_CACHE_LIMIT`: how many revoked or unknown keys to remember,
    /// which bounds memory whatever keys callers invent.
    public var keyCacheLimit = 10_000
    /// `KEYWAY_SHUTDOWN_TIMEOUT_SECONDS`: the most each step of a graceful stop
    /// (draining requests, writing last-used times, closing connections) may
    /// take; what is not done by then is abandoned and logged.
    public var shutdownTimeoutSeconds = 10

    /// `KEYWAY_TRUSTED_PROXIES`: comma-separated addresses and CIDR ranges of the
    /// reverse proxies in front of Keyway. Only from those peers is the client's
    /// address read from the forwarding header (`KEYWAY_CLIENT_ADDRESS_HEADER`:
    /// `X-Forwarded-For`, the default, or `Forwarded`); from any other peer, never.
    public var trustedProxies: TrustedProxies = .direct
    /// `KEYWAY_THROTTLE_ENTRIES`: how many emails, client addresses and sessions each
    /// sign-in throttle remembers; past it the least recently used is forgotten.
    public var throttleEntries = 100_000
    /// `KEYWAY_KEY_GENERATIONS_PER_MINUTE`: how many keys one environment may generate
    /// in any minute, from the dashboard or the CLI, on every instance together.
    public var keyGenerationsPerMinute = 20

    /// `KEYWAY_METRICS_TOKEN`: when set, `/metrics` answers only requests with
    /// `Authorization: Bearer <token>`. Never logged.
    public var metricsToken: String?
    /// `KEYWAY_METRICS_ADDRESS`: `host:port` of a listener of its own for `/metrics`
    /// (e.g. `127.0.0.1:9090`); when set, the main listener does not serve it.
    public var metricsAddress: ListenAddress?

    /// `KEYWAY_IDLE_TIMEOUT_SECONDS`: how long a connection may wait for its next
    /// request (or the first) before it is closed.
    public var idleTimeoutSeconds = 60
    /// `KEYWAY_REQUEST_HEAD_TIMEOUT_SECONDS`: how long a request's head (request line
    /// and headers) may take to arrive once its first byte has.
    public var requestHeadTimeoutSeconds = 10
    /// `KEYWAY_REQUEST_BODY_TIMEOUT_SECONDS`: how long a request's body may take to
    /// arrive once its head has.
    public var requestBodyTimeoutSeconds = 30
    /// `KEYWAY_MAX_CONNECTIONS`: most connections open at once; more wait in the
    /// listen queue. Keep it below the open-file limit (`ulimit -n`, often 1024),
    /// which the database's files share.
    public var maximumConnections = 768
    /// `KEYWAY_KEY_LOOKUP_TIMEOUT_MS`: how long a request waits for PostgreSQL to look
    /// up a key no cache knows before it is answered 503 `service_unavailable`.
    public var keyLookupTimeoutMilliseconds = 5000

    /// `KEYWAY_PUBLIC_URL`: the URL people and clients reach Keyway at, e.g.
    /// `https://keyway.example.com`. Dashboard cookies are `Secure`, `__Host-`
    /// prefixed and scoped to `/` when it is https.
    /// Defaults to `http://<host>:<port>`.
    public var publicURL: String?

    /// `KEYWAY_DATABASE_URL`: `postgres://user:password@host:5432/database` to run
    /// on PostgreSQL (many instances); unset, Keyway uses the SQLite file.
    public var databaseURL: String?
    /// `KEYWAY_DATABASE_CA_FILE`: a PEM file with the CA that signed the PostgreSQL
    /// server's certificate, checked with `sslmode` `require`, `verify-ca` or `verify-full`.
    public var databaseCAFile: String?
    /// `KEYWAY_DATABASE_POOL_SIZE`: most PostgreSQL connections per instance.
    public var databasePoolSize = 10
    /// `KEYWAY_DATABASE_CONNECT_TIMEOUT_MS`: how long to wait for a new PostgreSQL connection.
    public var databaseConnectTimeoutMilliseconds = 5000

    /// `KEYWAY_MASTER_KEY`: 32 bytes in base64 that seal user-token signing keys
    /// at rest. When unset, `master.key` beside the database is used (and created).
    public var masterKey: String?
    /// `KEYWAY_USER_TOKEN_MINUTES`: lifetime of user tokens, 1 to 60.
    public var userTokenMinutes = 30

    public init() {}

    /// ``keyGenerationsPerMinute`` as the limit the key service enforces.
    public var keyGenerationLimit: KeyGenerationLimit {
        KeyGenerationLimit(count: keyGenerationsPerMinute, windowSeconds: 60)
    }

    /// ``publicURL``, or the listening address when it is not set.
    public var effectivePublicURL: String {
        publicURL ?? "http://\(host.contains(":") ? "[\(host)]" : host):\(port)"
    }

    /// Reads the settings from environment variables.
    /// - Throws: ``ConfigurationError`` naming the variable and what it must be.
    public init(environment: [String: String]) throws(ConfigurationError) {
        func value(_ name: String) -> String? {
            guard let raw = environment[name]?.trimmingWhitespace(), !raw.isEmpty else { return nil }
            return raw
        }
        func integer(_ name: String, in range: ClosedRange<Int>) throws(ConfigurationError) -> Int? {
            guard let raw = value(name) else { return nil }
            guard let number = Int(raw), range.contains(number) else {
                throw ConfigurationError(
                    variable: name,
                    message: "must be a whole number from \(range.lowerBound) to \(range.upperBound), not '\(raw)'"
                )
            }
            return number
        }
        if let host = value("KEYWAY_HOST") { self.host = host }
        if let port = try integer("KEYWAY_PORT", in: 0...65535) { self.port = port }
        if let path = value("KEYWAY_DATABASE") { self.databasePath = path }
        if let list = value("KEYWAY_EGRESS_IPS") {
            self.egressIPs = try Self.parseEgressIPs(list)
        }
        if let level = value("KEYWAY_LOG_LEVEL") {
            guard let parsed = Logger.Level(rawValue: level.lowercased()) else {
                throw ConfigurationError(
                    variable: "KEYWAY_LOG_LEVEL",
                    message: "must be one of \(Logger.Level.allCases.map(\.rawValue).joined(separator: ", ")), not '\(level)'"
                )
            }
            self.logLevel = parsed
        }
        if let poll = try integer("KEYWAY_REVOCATION_POLL_MS", in: 50...60_000) { self.revocationPollMilliseconds = poll }
        if let flush = try integer("KEYWAY_USAGE_FLUSH_SECONDS", in: 1...3600) { self.usageFlushSeconds = flush }
        if let limit = try integer("KEYWAY_KEY_CACHE_LIMIT", in: 1...10_000_000) { self.keyCacheLimit = limit }
        if let minutes = try integer("KEYWAY_USER_TOKEN_MINUTES", in: 1...60) { self.userTokenMinutes = minutes }
        if let url = value("KEYWAY_DATABASE_URL") {
            guard let components = URLComponents(string: url), ["postgres", "postgresql"].contains(components.scheme ?? ""),
                components.host?.isEmpty == false
            else {
                throw ConfigurationError(variable: "KEYWAY_DATABASE_URL", message: "must look like postgres://user:password@host:5432/database")
            }
            self.databaseURL = url
        }
        if let file = value("KEYWAY_DATABASE_CA_FILE") {
            guard FileManager.default.isReadableFile(atPath: file) else {
                throw ConfigurationError(variable: "KEYWAY_DATABASE_CA_FILE", message: "names '\(file)', which is missing or not readable")
            }
            self.databaseCAFile = file
        }
        if let seconds = try integer("KEYWAY_SHUTDOWN_TIMEOUT_SECONDS", in: 1...600) { self.shutdownTimeoutSeconds = seconds }
        if let size = try integer("KEYWAY_DATABASE_POOL_SIZE", in: 1...1000) { self.databasePoolSize = size }
        if let timeout = try integer("KEYWAY_DATABASE_CONNECT_TIMEOUT_MS", in: 100...120_000) { self.databaseConnectTimeoutMilliseconds = timeout }
        if let key = value("KEYWAY_MASTER_KEY") {
            guard let data = Data(base64Encoded: key), data.count == 32 else {
                throw ConfigurationError(variable: "KEYWAY_MASTER_KEY", message: "must be 32 bytes in base64 (for example: openssl rand -base64 32)")
            }
            self.masterKey = key
        }
        if let entries = try integer("KEYWAY_THROTTLE_ENTRIES", in: 100...10_000_000) { self.throttleEntries = entries }
        var header = TrustedProxies.Header.xForwardedFor
        if let name = value("KEYWAY_CLIENT_ADDRESS_HEADER") {
            guard let parsed = TrustedProxies.Header(rawValue: name.lowercased()) else {
                throw ConfigurationError(variable: "KEYWAY_CLIENT_ADDRESS_HEADER", message: "must be X-Forwarded-For or Forwarded, not '\(name)'")
            }
            header = parsed
        }
        switch TrustedProxies.parse(value("KEYWAY_TRUSTED_PROXIES") ?? "", header: header) {
        case .success(let proxies): self.trustedProxies = proxies
        case .failure(let invalid):
            throw ConfigurationError(variable: "KEYWAY_TRUSTED_PROXIES", message: "'\(invalid.entry)' is not an IPv4 or IPv6 address or CIDR range")
        }
        if let count = try integer("KEYWAY_KEY_GENERATIONS_PER_MINUTE", in: 1...10_000) { self.keyGenerationsPerMinute = count }
        if let token = value("KEYWAY_METRICS_TOKEN") {
            // The message never repeats the value: it is a secret.
            guard token.utf8.count >= 16, token.unicodeScalars.allSatisfy({ (0x21...0x7E).contains($0.value) }) else {
                throw ConfigurationError(
                    variable: "KEYWAY_METRICS_TOKEN",
                    message: "must be at least 16 printable ASCII characters without spaces (for example: openssl rand -hex 32)"
                )
            }
            self.metricsToken = token
        }
        if let address = value("KEYWAY_METRICS_ADDRESS") {
            guard let parsed = ListenAddress(address) else {
                throw ConfigurationError(
                    variable: "KEYWAY_METRICS_ADDRESS",
                    message: "must be host:port, such as 127.0.0.1:9090 or [::1]:9090, not '\(address)'"
                )
            }
            self.metricsAddress = parsed
        }
        if let seconds = try integer("KEYWAY_IDLE_TIMEOUT_SECONDS", in: 1...3600) { self.idleTimeoutSeconds = seconds }
        if let seconds = try integer("KEYWAY_REQUEST_HEAD_TIMEOUT_SECONDS", in: 1...600) { self.requestHeadTimeoutSeconds = seconds }
        if let seconds = try integer("KEYWAY_REQUEST_BODY_TIMEOUT_SECONDS", in: 1...3600) { self.requestBodyTimeoutSeconds = seconds }
        if let count = try integer("KEYWAY_MAX_CONNECTIONS", in: 1...1_000_000) { self.maximumConnections = count }
        if let timeout = try integer("KEYWAY_KEY_LOOKUP_TIMEOUT_MS", in: 100...120_000) { self.keyLookupTimeoutMilliseconds = timeout }
        if let url = value("KEYWAY_PUBLIC_URL") {
            guard let parsed = URLComponents(string: url), ["http", "https"].contains(parsed.scheme?.lowercased() ?? ""),
                parsed.host?.isEmpty == false
            else {
                throw ConfigurationError(
                    variable: "KEYWAY_PUBLIC_URL",
                    message: "must be an http or https URL such as https://keyway.example.com, not '\(url)'"
                )
            }
            self.publicURL = url.hasSuffix("/") ? String(url.dropLast()) : url
        }
    }

    /// Parses `KEYWAY_EGRESS_IPS`: IPv4 or IPv6 addresses, optionally with a `/prefix`.
    static func parseEgressIPs(_ list: String) throws(ConfigurationError) -> [String] {
        var result: [String] = []
        for item in list.split(separator: ",") {
            let entry = String(item).trimmingWhitespace()
            guard !entry.isEmpty else { continue }
            guard isIPAddressOrRange(entry) else {
                throw ConfigurationError(variable: "KEYWAY_EGRESS_IPS", message: "'\(entry)' is not an IPv4 or IPv6 address or CIDR range")
            }
            result.append(entry)
        }
        return result
    }

    private static func isIPAddressOrRange(_ entry: String) -> Bool {
        let parts = entry.split(separator: "/", omittingEmptySubsequences: false)
        guard parts.count <= 2 else { return false }
        let address = String(parts[0])
        var buffer = [UInt8](repeating: 0, count: 16)
        let isV4 = inet_pton(AF_INET, address, &buffer) == 1
        let isV6 = !isV4 && inet_pton(AF_INET6, address, &buffer) == 1
        guard isV4 || isV6 else { return false }
        guard parts.count == 2 else { return true }
        guard let prefix = Int(parts[1]) else { return false }
        return (0...(isV4 ? 32 : 128)).contains(prefix)
    }
}

/// A `host:port` to listen on; an IPv6 host is written in brackets.
public struct ListenAddress: Sendable, Equatable, CustomStringConvertible {
    public var host: String
    public var port: Int

    /// - Parameters:
    ///   - host: An address or name, IPv6 without brackets.
    ///   - port: 0 to 65535; 0 picks a free port.
    public init(host: String, port: Int) {
        self.host = host
        self.port = port
    }

    /// Parses `host:port` or `[v6]:port`; `nil` when it is neither.
    public init?(_ text: String) {
        let host: Substring
        let port: Substring
        if text.hasPrefix("[") {
            guard let close = text.firstIndex(of: "]"), text[text.index(after: close)...].hasPrefix(":") else { return nil }
            host = text[text.index(after: text.startIndex)..<close]
            port = text[text.index(close, offsetBy: 2)...]
        } else {
            guard let colon = text.lastIndex(of: ":"), !text[..<colon].contains(":") else { return nil }
            host = text[..<colon]
            port = text[text.index(after: colon)...]
        }
        guard !host.isEmpty, !host.contains(where: \.isWhitespace), let number = Int(port), (0...65535).contains(number) else { return nil }
        self.init(host: String(host), port: number)
    }

    public var description: String { host.contains(":") ? "[\(host)]:\(port)" : "\(host):\(port)" }
}

/// A setting that cannot be used, with the variable to fix.
public struct ConfigurationError: Error, CustomStringConvertible, Equatable {
    public let variable: String
    public let message: String
    public var description: String { "\(variable) \(message)" }
}

extension String {
    func trimmingWhitespace() -> String {
        String(self.drop(while: \.isWhitespace).reversed().drop(while: \.isWhitespace).reversed())
    }
}
