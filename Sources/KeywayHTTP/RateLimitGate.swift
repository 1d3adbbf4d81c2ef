import HTTPTypes
import Hummingbird
import KeywayCore
import Metrics
import NIOCore
import Synchronization

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

    /// The 429 for a refusal, in the error shape plus the draft's problem fields: what
    /// ``ErrorMappingMiddleware/response(for:requestID:)`` writes for ``refusal``, from a body
    /// rendered once per limit and wait (``QuotaExceededBodies``).
    func refusal(requestID: String) -> ForwardAuthAnswer? {
        guard let decision, !decision.allowed else { return nil }
        let body = QuotaExceededBodies.shared.body(
            limit: decision.policy.requestsPerSecond,
            retryAfter: decision.retryAfterSeconds ?? 1,
            requestID: requestID
        )
        var headers: HTTPFields = [.contentType: "application/problem+json"]
        apply(to: &headers)
        return ForwardAuthAnswer(status: .tooManyRequests, headers: headers, body: body)
    }

    /// ``refusal(requestID:)`` as a response.
    func refusalResponse(requestID: String) -> Response? {
        refusal(requestID: requestID)?.response
    }
}

/// The bodies of 429 `rate_limited` answers, rendered once per (limit, wait) around the request
/// id: refusing is as frequent as serving when a client ignores its limit, and a refusal should
/// cost less than what it refuses. Byte for byte what ``ErrorBody`` writes (a test compares them).
final class QuotaExceededBodies: Sendable {
    static let shared = QuotaExceededBodies()

    private struct Parts {
        let beforeRequestID: ByteBuffer
        let afterRequestID: ByteBuffer
    }

    private struct Key: Hashable {
        let limit: Int
        let retryAfter: Int
    }

    private let cache = Mutex<[Key: Parts]>([:])
    /// Environments seldom have more than a few distinct limits; past this, start again.
    private static let capacity = 1024
    private static let placeholder = "\u{1}request-id\u{1}"

    func body(limit: Int, retryAfter: Int, requestID: String) -> ByteBuffer {
        let key = Key(limit: limit, retryAfter: retryAfter)
        let parts = cache.withLock { $0[key] } ?? render(key)
        var idWriter = JSONWriter(capacity: requestID.utf8.count + 2)
        idWriter.string(requestID)
        var body = ByteBufferAllocator().buffer(
            capacity: parts.beforeRequestID.readableBytes + idWriter.buffer.readableBytes + parts.afterRequestID.readableBytes
        )
        body.writeImmutableBuffer(parts.beforeRequestID)
        body.writeImmutableBuffer(idWriter.buffer)
        body.writeImmutableBuffer(parts.afterRequestID)
        return body
    }

    private func render(_ key: Key) -> Parts {
        let error = KeywayError.rateLimited(limit: key.limit, retryAfter: key.retryAfter)
        var whole = ErrorBody(error: error, requestID: Self.placeholder, problem: .quotaExceeded).jsonBuffer
        var quoted = JSONWriter()
        quoted.string(Self.placeholder)
        let bytes = whole.readBytes(length: whole.readableBytes) ?? []
        let marker = Array(quoted.buffer.readableBytesView)
        // The placeholder is written once, as the request id's value.
        let start = bytes.indices.first { bytes[$0...].starts(with: marker) } ?? bytes.endIndex
        let parts = Parts(
            beforeRequestID: ByteBuffer(bytes: bytes[..<start]),
            afterRequestID: ByteBuffer(bytes: bytes[min(start + marker.count, bytes.endIndex)...])
        )
        cache.withLock { cache in
            if cache.count >= Self.capacity { cache.removeAll(keepingCapacity: true) }
            cache[key] = parts
        }
        return parts
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
        var response = await ErrorMappingMiddleware.responding(to: request, context: context, next: next)
        admission.apply(to: &response.headers)
        return response
    }
}
