public import Foundation
import Synchronization

/// An HTTP client that posts one delivery. The server's is AsyncHTTPClient, bound to the
/// egress address; tests give their own.
public protocol WebhookTransport: Sendable {
    /// Posts `body` to `url` and answers with the response's status, or throws when none
    /// came within `timeout`. Redirects are answers, never followed.
    func post(url: URL, headers: [(String, String)], body: String, timeout: TimeInterval) async throws -> WebhookResponse
}

/// Why a post got no answer, in a few words that say nothing about the network behind the URL
/// (no address, no port): what the delivery list shows.
public struct WebhookTransportError: Error, Sendable {
    public let reason: String
    public init(_ reason: String) { self.reason = reason }
}

/// What an endpoint answered.
public struct WebhookResponse: Sendable, Hashable {
    public var statusCode: Int
    /// `Retry-After` in seconds, when the answer had one (delta-seconds or an HTTP date).
    public var retryAfter: TimeInterval?

    public init(statusCode: Int, retryAfter: TimeInterval? = nil) {
        self.statusCode = statusCode
        self.retryAfter = retryAfter
    }
}

/// Manages endpoints and their secrets, and makes each attempt of a delivery: checks the URL
/// again, signs as the Standard Webhooks specification says, posts, and decides what comes next.
public struct Webhooks: Sendable {
    /// How many endpoints one environment may have.
    public static let endpointLimit = 10
    /// How long a rotated-out secret still signs deliveries.
    public static let secretOverlap: TimeInterval = 86_400

    public let store: any WebhookStore
    let masterKey: MasterKey
    public let policy: WebhookURLPolicy

    public init(store: any WebhookStore, masterKey: MasterKey, policy: WebhookURLPolicy) {
        self.store = store
        self.masterKey = masterKey
        self.policy = policy
    }

    /// Adds an endpoint subscribed to `events` (every event when empty).
    /// - Returns: The endpoint and its secret, to show once.
    /// - Throws: ``KeywayError`` `invalid_input` for a URL the policy refuses, `too_many_webhook_endpoints`.
    public func createEndpoint(
        in environmentID: EnvironmentID,
        url: String,
        events: Set<WebhookEventType>,
        audit: AuditContext,
        at date: Date = Date()
    ) async throws -> (WebhookEndpoint, WebhookSecret) {
        let checked = try await policy.check(url.trimmingCharacters(in: .whitespaces))
        let id = WebhookEndpointID.generate()
        let secret = WebhookSecret.generate()
        let endpoint = WebhookEndpoint(
            id: id,
            environmentID: environmentID,
            url: checked.absoluteString,
            events: events.isEmpty ? Set(WebhookEventType.allCases) : events,
            sealedSecret: try masterKey.seal(secret.bytes, context: Self.sealingContext(id)),
            createdAt: date
        )
        try await store.insertWebhookEndpoint(endpoint, limit: Self.endpointLimit, audit: audit)
        return (endpoint, secret)
    }

    /// Gives an endpoint a new secret; the old one signs too for ``secretOverlap``.
    /// - Returns: The new secret, to show once.
    /// - Throws: ``KeywayError`` `webhook_endpoint_not_found`.
    public func rotateSecret(
        _ id: WebhookEndpointID,
        in accountID: AccountID,
        audit: AuditContext,
        at date: Date = Date()
    ) async throws
        -> WebhookSecret
    {
        let secret = WebhookSecret.generate()
        let sealed = try masterKey.seal(secret.bytes, context: Self.sealingContext(id))
        guard
            try await store.rotateWebhookSecret(
                id,
                in: accountID,
                sealedSecret: sealed,
                previousExpiresAt: date.addingTimeInterval(Self.secretOverlap),
                audit: audit,
                at: date
            )
        else { throw KeywayError.webhookEndpointNotFound(id.rawValue) }
        return secret
    }

    /// The secrets that sign a delivery at `date`: the current one, and the previous while it overlaps.
    public func secrets(of endpoint: WebhookEndpoint, at date: Date) throws -> [WebhookSecret] {
        let context = Self.sealingContext(endpoint.id)
        var secrets = [WebhookSecret(bytes: try masterKey.unseal(endpoint.sealedSecret, context: context))]
        if let previous = endpoint.sealedPreviousSecret, let end = endpoint.previousSecretExpiresAt, end > date {
            secrets.append(WebhookSecret(bytes: try masterKey.unseal(previous, context: context)))
        }
        return secrets
    }

    /// Makes one attempt of a claimed delivery and says what to record; never throws: every
    /// failure is an attempt that failed.
    public func attempt(
        _ claimed: ClaimedWebhookDelivery,
        through transport: any WebhookTransport,
        at date: Date = Date()
    ) async
        -> WebhookAttemptRecord
    {
        let delivery = claimed.delivery
        var statusCode: Int?
        var retryAfter: TimeInterval?
        var failure: String?
        let body = delivery.body(for: claimed.endpoint)
        do {
            let timestamp = Int64(date.timeIntervalSince1970)
            let signature = WebhookSecret.signatureHeader(
                id: delivery.id,
                timestamp: timestamp,
                body: body,
                secrets: try secrets(of: claimed.endpoint, at: date)
            )
            let policy = policy
            let url = claimed.endpoint.url
            // One deadline for everything the attempt waits on — the name's resolution, the
            // connection, the answer and its body — well inside the claim's lease.
            let response = try await Self.within(WebhookRetrySchedule.timeout) {
                // Again at every attempt: the name may resolve elsewhere now (see docs/webhooks.md).
                let checked = try await policy.check(url)
                return try await transport.post(
                    url: checked,
                    headers: [
                        ("content-type", "application/json"), ("user-agent", "Keyway-Webhooks/1"),
                        ("webhook-id", delivery.id), ("webhook-timestamp", String(timestamp)), ("webhook-signature", signature),
                    ],
                    body: body,
                    timeout: WebhookRetrySchedule.timeout
                )
            }
            statusCode = response.statusCode
            retryAfter = response.retryAfter
        } catch let error as KeywayError {
            failure = "Refused: \(error.message)"
        } catch {
            failure = Self.describe(error)
        }
        let attempts = delivery.attempts + 1
        let failed = statusCode.map { !(200..<300).contains($0) } ?? true
        let (next, disable) = WebhookRetrySchedule.next(
            afterAttempt: attempts,
            statusCode: statusCode,
            retryAfter: retryAfter,
            failingSince: failed ? claimed.endpoint.failureStreak(failingAt: date) : nil,
            at: date
        )
        return WebhookAttemptRecord(
            deliveryID: delivery.id,
            endpointID: claimed.endpoint.id,
            claim: claimed.claim,
            at: date,
            statusCode: statusCode,
            error: failure,
            next: next,
            disableEndpoint: disable
        )
    }

    /// A transport error in a few words, never more than its kind: no address, port or body.
    static func describe(_ error: any Error) -> String {
        switch error {
        case let error as WebhookTransportError: error.reason
        case is AttemptTimedOut: "No answer within \(Int(WebhookRetrySchedule.timeout)) seconds."
        default: "The request failed."
        }
    }

    struct AttemptTimedOut: Error {}

    /// Runs `work` and answers with its result, or throws ``AttemptTimedOut`` after `timeout`,
    /// cancelling it: whichever comes first. Work that ignores cancellation (a `getaddrinfo`
    /// on another thread) is left to finish on its own; its answer is dropped.
    static func within<Value: Sendable>(_ timeout: TimeInterval, _ work: @escaping @Sendable () async throws -> Value) async throws -> Value {
        let race = Race<Value>()
        return try await withCheckedThrowingContinuation { continuation in
            race.start(continuation, timeout: timeout, work: work)
        }
    }

    /// Binds a sealed secret to its endpoint, so a sealed blob cannot be moved to another row.
    static func sealingContext(_ id: WebhookEndpointID) -> String {
        "keyway-webhook-secret:\(id.rawValue)"
    }
}

/// The first of a piece of work and its deadline to finish, for ``Webhooks/within(_:_:)``.
private final class Race<Value: Sendable>: Sendable {
    private struct State {
        var continuation: CheckedContinuation<Value, any Error>?
        var worker: Task<Void, Never>?
        var timer: Task<Void, Never>?
    }

    private let state = Mutex(State())

    func start(_ continuation: CheckedContinuation<Value, any Error>, timeout: TimeInterval, work: @escaping @Sendable () async throws -> Value) {
        state.withLock { $0.continuation = continuation }
        let worker = Task {
            do {
                self.finish(.success(try await work()))
            } catch {
                self.finish(.failure(error))
            }
        }
        let timer = Task {
            try? await Task.sleep(for: .milliseconds(Int64(timeout * 1000)))
            if !Task.isCancelled { self.finish(.failure(Webhooks.AttemptTimedOut())) }
        }
        let finished = state.withLock { state in
            state.worker = worker
            state.timer = timer
            return state.continuation == nil
        }
        // The work may have finished before its timer was known: stop the timer now.
        if finished { timer.cancel() }
    }

    private func finish(_ result: Result<Value, any Error>) {
        let (continuation, worker, timer) = state.withLock { state in
            defer { state.continuation = nil }
            return (state.continuation, state.worker, state.timer)
        }
        guard let continuation else { return }
        worker?.cancel()
        timer?.cancel()
        continuation.resume(with: result)
    }
}
