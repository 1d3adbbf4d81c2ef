import HTTPTypes
import Hummingbird
import KeywayCore
import Metrics

/// Where a request authenticated by a key meets its environment's rate limit: every endpoint
/// that accepts keys (the API through ``RateLimitMiddleware``, and any other that authenticates
/// a key itself) asks ``admit(_:)`` once per request and adds what it answers to its response.
struct RateLimitGate: Sendable {
    let limits: RateLimits

    /// Counts one request of `key` (memory only: no query).
    func admit(_ key: AuthenticatedKey) -> RateLimitAdmission {
        let decision = limits.take(key)
        if let decision, !decision.allowed {
            Self.limitedCounters[key.environmentID.environment]?.increment()
        }
        return RateLimitAdmission(decision: decision)
    }

    /// `keyway_rate_limited_total` by environment, made once.
    static let limitedCounters: [Environment: Counter] = Dictionary(
        uniqueKeysWithValues: Environment.allCases.map {
            ($0, Counter(label: "keyway_rate_limited_total", dimensions: [("environment", $0.rawValue)]))
        }
    )
}

/// What the gate decided about one request, and the fields that say so.
struct RateLimitAdmission: Sendable {
    /// `nil` when the environment has no limit: then no field is added.
    let decision: RateLimitDecision?

    /// The refusal to answer with (429 `rate_limited`), or `nil` when the request may proceed.
    var refusal: KeywayError? {
        guard let decision, !decision.allowed else { return nil }
        return .rateLimited(limit: decision.policy.requestsPerSecond, retryAfter: decision.retryAfterSeconds ?? 1)
    }

    /// Adds `RateLimit-Policy` and `RateLimit` (draft-ietf-httpapi-ratelimit-headers-10), and
    /// `Retry-After` on a refusal.
    func apply(to fields: inout HTTPFields) {
        guard let decision else { return }
        fields[.rateLimitPolicy] = #""default";q=\#(decision.policy.requestsPerSecond);w=1"#
        fields[.rateLimit] = #""default";r=\#(decision.remaining);t=\#(decision.resetSeconds)"#
        if let retryAfter = decision.retryAfterSeconds {
            fields[.retryAfter] = String(retryAfter)
        }
    }

    /// The 429 response for a refusal, in the error shape plus the draft's problem fields.
    func refusalResponse(requestID: String) -> Response? {
        guard let refusal else { return nil }
        var response = ErrorMappingMiddleware.response(for: refusal, requestID: requestID)
        apply(to: &response.headers)
        return response
    }
}

extension HTTPField.Name {
    static let rateLimitPolicy = HTTPField.Name("RateLimit-Policy")!
    static let rateLimit = HTTPField.Name("RateLimit")!
}

/// Applies the key's rate limit to every request behind ``SecretKeyAuthenticator``: a refused
/// request gets a 429 without reaching its handler; every other response of a limited key,
/// success or error, carries the RateLimit fields.
struct RateLimitMiddleware: RouterMiddleware {
    typealias Context = KeywayRequestContext

    let gate: RateLimitGate

    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        guard let key = context.authenticatedKey else { return try await next(request, context) }
        let admission = gate.admit(key)
        if let refused = admission.refusalResponse(requestID: context.requestID) { return refused }
        var response: Response
        do {
            response = try await next(request, context)
        } catch {
            // Mapped here rather than outside so the fields reach every error response too,
            // Hummingbird's own (a body over the limit) as well as Keyway's.
            response = ErrorMappingMiddleware.response(
                for: ErrorMappingMiddleware.keywayError(for: error, request: request, context: context),
                requestID: context.requestID
            )
        }
        admission.apply(to: &response.headers)
        return response
    }
}
