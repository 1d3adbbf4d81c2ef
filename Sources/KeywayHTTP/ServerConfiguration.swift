import Foundation
public import KeywayCore

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// What the HTTP server reads: where it listens, how it is reached, what it publishes,
/// its intervals and its limits on connections and sign-in. Read from `KEYWAY_*`
/// environment variables; the database, the master key, the key cache and the log are
/// the executable's settings, which open what is handed to ``buildApplication(configuration:store:keys:metrics:userTokens:attemptLedger:passwordHasher:now:logger:)``.
///
/// Every setting has a default that runs out of the box: `keyway serve` alone
/// listens on 127.0.0.1:8080. The README's configuration table lists the same variables.
public struct ServerConfiguration: Sendable, Equatable {
    /// `KEYWAY_HOST`: the address to listen on.
    public var host = "127.0.0.1"
    /// `KEYWAY_PORT`: the TCP port to listen on (0 picks a free one).
    public var port = 8080
    /// `KEYWAY_EGRESS_IPS`: comma-separated addresses (or CIDR ranges) that
    /// Keyway's outbound traffic leaves from, published at `/ip-addresses`.
    public var egressIPs: [String] = []
    /// `KEYWAY_EGRESS_BIND`: the local address every outbound connection (webhooks) binds to;
    /// it must be one of ``egressIPs``, so what is published is where traffic leaves from.
    public var egressBind: String?
    /// `KEYWAY_WEBHOOK_ALLOW_INSECURE=1`: webhook URLs may be `http` to loopback and resolve to
    /// any address, for development. Off, only `https` to public addresses is called.
    public var webhookAllowInsecure = false
    /// `KEYWAY_WEBHOOK_DELIVERY=off`: this instance writes events to the outbox but delivers
    /// none; on PostgreSQL, other instances (say, ones that serve no API traffic) deliver them.
    public var webhookDelivery = true
    /// `KEYWAY_REVOCATION_POLL_MS`: how often to look for keys revoked by other
    /// processes (the CLI, other instances) when no notification channel is up:
    /// always on SQLite, and on PostgreSQL while the LISTEN connection is down.
    /// The bound on how long such a key may still be accepted here.
    public var revocationPollMilliseconds = 250
    /// `KEYWAY_USAGE_FLUSH_SECONDS`: how often keys' last-used times are written.
    public var usageFlushSeconds = 10
    /// `KEYWAY_AUDIT_RETENTION_DAYS`: how long audit entries are kept; older ones are
    /// deleted hourly by the maintenance service.
    public var auditRetentionDays = Self.defaultAuditRetentionDays
    /// A year: long enough for an annual review, the usual horizon of compliance audits.
    public static let defaultAuditRetentionDays = 365
    /// `KEYWAY_GITHUB_SECRET_SCANNING_KEYS`: a file of GitHub's secret-scanning public keys;
    /// when set, `POST /leaked-keys` accepts only reports GitHub signed.
    public var secretScanningKeys: SecretScanningKeys?
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
    /// Whether `/auth` and `/keys/verify` are answered on the event loop when memory decides
    /// them (``ForwardAuthLane``, ``KeyVerificationLane``). Not a setting: the answers are the
    /// same either way, and tests turn it off to show that.
    public var lanes = true
    /// `KEYWAY_PUBLIC_URL`: the URL people and clients reach Keyway at, e.g.
    /// `https://keyway.example.com`. Dashboard cookies are `Secure`, `__Host-`
    /// prefixed and scoped to `/` when it is https.
    /// Defaults to `http://<host>:<port>`.
    public var publicURL: String?

    public init() {}

    /// ``publicURL``, or the listening address when it is not set.
    public var effectivePublicURL: String {
        publicURL ?? "http://\(host.contains(":") ? "[\(host)]" : host):\(port)"
    }

    /// Reads the settings from environment variables.
    /// - Throws: ``ConfigurationError`` naming the variable and what it must be.
    public init(environment: [String: String]) throws(ConfigurationError) {
        let settings = EnvironmentSettings(environment)
        if let host = settings.string("KEYWAY_HOST") { self.host = host }
        if let port = try settings.integer("KEYWAY_PORT", in: 0...65535) { self.port = port }
        if let list = settings.string("KEYWAY_EGRESS_IPS") { self.egressIPs = try Self.parseEgressIPs(list) }
        if let bind = settings.string("KEYWAY_EGRESS_BIND") {
            guard let address = IPAddress(bind), !bind.contains("/") else {
                throw ConfigurationError(variable: "KEYWAY_EGRESS_BIND", message: "'\(bind)' is not an IPv4 or IPv6 address")
            }
            guard egressIPs.compactMap(IPRange.init).contains(where: { $0.contains(address) }) else {
                throw ConfigurationError(
                    variable: "KEYWAY_EGRESS_BIND",
                    message: "'\(bind)' is not among KEYWAY_EGRESS_IPS; publish the address outbound traffic leaves from"
                )
            }
            self.egressBind = bind
        }
        if let delivery = settings.string("KEYWAY_WEBHOOK_DELIVERY") {
            guard delivery == "on" || delivery == "off" else {
                throw ConfigurationError(variable: "KEYWAY_WEBHOOK_DELIVERY", message: "must be on or off, not '\(delivery)'")
            }
            self.webhookDelivery = delivery == "on"
        }
        if let insecure = settings.string("KEYWAY_WEBHOOK_ALLOW_INSECURE") {
            guard insecure == "1" || insecure == "0" else {
                throw ConfigurationError(variable: "KEYWAY_WEBHOOK_ALLOW_INSECURE", message: "must be 1 or 0, not '\(insecure)'")
            }
            self.webhookAllowInsecure = insecure == "1"
        }
        if let poll = try settings.integer("KEYWAY_REVOCATION_POLL_MS", in: 50...60_000) { self.revocationPollMilliseconds = poll }
        if let flush = try settings.integer("KEYWAY_USAGE_FLUSH_SECONDS", in: 1...3600) { self.usageFlushSeconds = flush }
        if let seconds = try settings.integer("KEYWAY_SHUTDOWN_TIMEOUT_SECONDS", in: 1...600) { self.shutdownTimeoutSeconds = seconds }
        if let days = try settings.integer("KEYWAY_AUDIT_RETENTION_DAYS", in: 1...36_500) { self.auditRetentionDays = days }
        if let path = settings.string("KEYWAY_GITHUB_SECRET_SCANNING_KEYS") { self.secretScanningKeys = try SecretScanningKeys(file: path) }
        if let entries = try settings.integer("KEYWAY_THROTTLE_ENTRIES", in: 100...10_000_000) { self.throttleEntries = entries }
        var header = TrustedProxies.Header.xForwardedFor
        if let name = settings.string("KEYWAY_CLIENT_ADDRESS_HEADER") {
            guard let parsed = TrustedProxies.Header(rawValue: name.lowercased()) else {
                throw ConfigurationError(variable: "KEYWAY_CLIENT_ADDRESS_HEADER", message: "must be X-Forwarded-For or Forwarded, not '\(name)'")
            }
            header = parsed
        }
        switch TrustedProxies.parse(settings.string("KEYWAY_TRUSTED_PROXIES") ?? "", header: header) {
        case .success(let proxies): self.trustedProxies = proxies
        case .failure(let invalid):
            throw ConfigurationError(variable: "KEYWAY_TRUSTED_PROXIES", message: "'\(invalid.entry)' is not an IPv4 or IPv6 address or CIDR range")
        }
        if let token = settings.string("KEYWAY_METRICS_TOKEN") {
            // The message never repeats the value: it is a secret.
            guard token.utf8.count >= 16, token.unicodeScalars.allSatisfy({ (0x21...0x7E).contains($0.value) }) else {
                throw ConfigurationError(
                    variable: "KEYWAY_METRICS_TOKEN",
                    message: "must be at least 16 printable ASCII characters without spaces (for example: openssl rand -hex 32)"
                )
            }
            self.metricsToken = token
        }
        if let address = settings.string("KEYWAY_METRICS_ADDRESS") {
            guard let parsed = ListenAddress(address) else {
                throw ConfigurationError(
                    variable: "KEYWAY_METRICS_ADDRESS",
                    message: "must be host:port, such as 127.0.0.1:9090 or [::1]:9090, not '\(address)'"
                )
            }
            self.metricsAddress = parsed
        }
        if let seconds = try settings.integer("KEYWAY_IDLE_TIMEOUT_SECONDS", in: 1...3600) { self.idleTimeoutSeconds = seconds }
        if let seconds = try settings.integer("KEYWAY_REQUEST_HEAD_TIMEOUT_SECONDS", in: 1...600) { self.requestHeadTimeoutSeconds = seconds }
        if let seconds = try settings.integer("KEYWAY_REQUEST_BODY_TIMEOUT_SECONDS", in: 1...3600) { self.requestBodyTimeoutSeconds = seconds }
        if let count = try settings.integer("KEYWAY_MAX_CONNECTIONS", in: 1...1_000_000) { self.maximumConnections = count }
        if let url = settings.string("KEYWAY_PUBLIC_URL") {
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
            let entry = item.trimmingCharacters(in: .whitespacesAndNewlines)
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
