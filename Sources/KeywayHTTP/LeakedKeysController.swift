import Crypto
import Foundation
import HTTPTypes
import Hummingbird
import KeywayCore
import Logging
import Synchronization

/// `POST /leaked-keys`: GitHub's secret-scanning partner endpoint. Each reported token that is
/// an active key, or one in its grace, is revoked at once: possession of a live key is proof
/// enough that it is compromised, whoever reports it. The answer is GitHub's feedback format
/// and says nothing beyond whether each token is a Keyway key.
final class LeakedKeysController: Sendable {
    typealias Context = KeywayRequestContext

    let keys: SecretKeys
    /// When set, only reports GitHub signed are accepted.
    let signatures: SecretScanningKeys?
    let trustedProxies: TrustedProxies
    /// Unsigned reports per client address.
    let unsignedReports: RateLimiter<String>

    /// - Parameter now: The limiter's clock, monotonic nanoseconds: the rate limits' own.
    init(keys: SecretKeys, signatures: SecretScanningKeys?, trustedProxies: TrustedProxies, now: @escaping @Sendable () -> UInt64) {
        self.keys = keys
        self.signatures = signatures
        self.trustedProxies = trustedProxies
        self.unsignedReports = RateLimiter(now: now)
    }
    /// When the limiter last forgot idle addresses (monotonic nanoseconds).
    private let lastPrune = Mutex<UInt64>(0)

    /// Most tokens in one report; GitHub sends a handful at a time.
    static let maximumTokens = 1000
    /// A report's largest body: 1000 matches with long URLs fit in far less.
    static let maximumBody = 512 * 1024
    /// Unsigned reports a client may send each second: enough for a scanner, little for a flood.
    static let unsignedPolicy = RateLimitPolicy(requestsPerSecond: 5)
    static let keyIdentifier = HTTPField.Name("Github-Public-Key-Identifier")!
    static let keySignature = HTTPField.Name("Github-Public-Key-Signature")!

    var endpoints: RouteCollection<Context> {
        let routes = RouteCollection(context: Context.self)
        routes.post("leaked-keys", use: report)
        return routes
    }

    /// One reported match, as GitHub sends it.
    struct ReportedToken: Decodable {
        let token: String
        let type: String?
        let url: String?
        let source: String?
    }

    @Sendable func report(_ request: Request, context: Context) async throws -> Response {
        let client = trustedProxies.clientAddress(peer: context.remoteAddress, headers: request.headers)
        if let signatures {
            // Checked before the body is read as JSON: an unsigned body is not parsed at all.
            let body = try await JSONBody.collect(request, upTo: Self.maximumBody)
            guard let identifier = request.headers[Self.keyIdentifier], let signature = request.headers[Self.keySignature],
                signatures.verify(identifier: identifier, signature: signature, body: body.readableBytesView)
            else {
                throw KeywayError(
                    .invalidReportSignature,
                    "This endpoint accepts only reports signed by GitHub's secret scanning (Github-Public-Key-Identifier and Github-Public-Key-Signature)."
                )
            }
            return try await answer(body, actor: "github-secret-scanning", client: client, request: request, context: context)
        }
        pruneIdleClients()
        let decision = unsignedReports.take(client?.throttleKey ?? "unknown", policy: Self.unsignedPolicy)
        guard decision.allowed else {
            throw KeywayError.tooManyLeakReports(limit: Self.unsignedPolicy.requestsPerSecond, retryAfter: decision.retryAfterSeconds ?? 1)
        }
        return try await answer(
            try await JSONBody.collect(request, upTo: Self.maximumBody),
            actor: "leak-report",
            client: client,
            request: request,
            context: context
        )
    }

    /// Every ten seconds, the limiter forgets addresses idle for a window: its memory follows
    /// the clients of the last seconds, not every address ever seen.
    private func pruneIdleClients() {
        let now = monotonicNanoseconds()
        let due = lastPrune.withLock { last in
            guard now &- last > 10_000_000_000 else { return false }
            last = now
            return true
        }
        if due { unsignedReports.prune() }
    }

    private func answer(_ body: ByteBuffer, actor: String, client: IPAddress?, request: Request, context: Context) async throws -> Response {
        // Counted before decoding: a body of small items must not cost the decoder first.
        guard !JSONBody.holdsArray(longerThan: Self.maximumTokens, withinDepth: 1, in: body) else {
            throw KeywayError.invalidInput(field: "body", "A report may hold at most \(Self.maximumTokens) tokens; send the rest in another.")
        }
        let reported = try JSONBody.decode([ReportedToken].self, from: body)
        let audit = AuditContext(
            actor: actor,
            clientAddress: client?.description,
            userAgent: request.headers[.userAgent],
            requestID: context.requestID
        )
        var feedback: [[String: String]] = []
        var revoked = 0
        // A token reported twice is looked up once.
        var labels: [String: String] = [:]
        for item in reported {
            let label: String
            if let known = labels[item.token] {
                label = known
            } else {
                switch try await keys.reportLeaked(
                    Substring(item.token),
                    report: LeakReport(url: item.url, source: item.source, type: item.type),
                    audit: audit
                ) {
                case .unknown: label = "false_positive"
                case .alreadyRevoked: label = "true_positive"
                case .revoked:
                    label = "true_positive"
                    revoked += 1
                }
                labels[item.token] = label
            }
            feedback.append([
                "token_hash": SHA256.hash(data: Data(item.token.utf8)).map { String(format: "%02x", $0) }.joined(),
                "token_type": item.type ?? "keyway_api_key",
                "label": label,
            ])
        }
        context.logger.notice("leak report", metadata: ["tokens": "\(reported.count)", "keys.revoked": "\(revoked)", "actor": "\(actor)"])
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        var response = Response(
            status: .ok,
            headers: [.contentType: "application/json; charset=utf-8"],
            body: .init(byteBuffer: ByteBuffer(bytes: try encoder.encode(feedback)))
        )
        NoStoreMiddleware<Context>.mark(&response)
        return response
    }
}
