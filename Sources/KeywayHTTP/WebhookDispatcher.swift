import AsyncHTTPClient
import Foundation
import KeywayCore
import Logging
import NIOCore
import NIOHTTP1
import NIOSSL
import ServiceLifecycle
import Synchronization

/// Delivers the outbox, off the request path: claims due deliveries (each by exactly one
/// instance), makes their attempts concurrently and records what came of each.
///
/// Nothing is lost if the process dies mid-attempt: the claim lapses after ``lease`` and
/// the delivery is made again (at least once; receivers drop repeats by `webhook-id`).
struct WebhookDispatcher: Service {
    let webhooks: Webhooks
    let transport: any WebhookTransport
    let logger: Logger
    /// How often to look for due deliveries when the last look found none.
    var pollInterval: Duration = .milliseconds(200)
    /// How many deliveries one claim takes at most.
    var batchSize = 32
    /// How many attempts may run at once.
    var maximumInFlight = 128
    /// How many of one endpoint's attempts one claim takes; an endpoint with more than this many
    /// running is left out of the next claims, so a slow or backlogged endpoint holds at most
    /// twice this many slots and never the others' turn.
    var maximumInFlightPerEndpoint = 32
    /// Longer than an attempt's timeout, with room to record its result.
    static let lease: TimeInterval = 30
    /// Called once the dispatcher stops (the HTTP client's shutdown).
    var onStop: @Sendable () async -> Void = {}
    /// Set when the dispatcher stops: attempts cut short by the shutdown record nothing.
    private let stopping = StopFlag()

    func run() async {
        let inFlight = InFlightCount()
        let warnings = WarningThrottle()
        // A finished attempt makes room: look again at once rather than at the next poll.
        let waker = Waker()
        await MaintenanceService.repeatUntilShutdown(every: pollInterval, waker: waker) {
            // Claim as long as there is room and work; each attempt runs on its own, so one slow
            // endpoint (up to the 15 s timeout) delays nobody else's deliveries. At shutdown the
            // attempts in flight are abandoned: their claims lapse and another round sends them.
            while true {
                let (room, busy) = inFlight.room(total: maximumInFlight, perEndpoint: maximumInFlightPerEndpoint)
                guard room > 0 else { return }
                let claimed = try await webhooks.store.claimWebhookDeliveries(
                    at: Date(),
                    lease: Self.lease,
                    limit: min(room, batchSize),
                    perEndpoint: maximumInFlightPerEndpoint,
                    excluding: busy
                )
                for delivery in claimed {
                    let endpoint = delivery.endpoint.id
                    inFlight.add(endpoint)
                    Task {
                        await deliver(delivery)
                        // Only when this makes room a claim could use: not after every attempt.
                        if inFlight.remove(endpoint, total: maximumInFlight, perEndpoint: maximumInFlightPerEndpoint) { waker.wake() }
                    }
                }
                guard !claimed.isEmpty else { return }
            }
        } onFailure: { error in
            // At most every ten seconds while the database is away: each poll would fail alike.
            if warnings.mayWarn() {
                logger.warning("could not claim webhook deliveries", metadata: ["error": "\(String(reflecting: error))"])
            }
        }
        // Attempts still in flight are abandoned, not failed: their claims lapse and they are
        // made again (the HTTP client's shutdown cancels them; nothing of that is recorded).
        stopping.stop()
        await onStop()
    }

    /// Claims one batch and makes its attempts, waiting for all of them (tests step through retries with it).
    /// - Returns: How many deliveries it claimed.
    func deliverOneBatch() async throws -> Int {
        let claimed = try await webhooks.store.claimWebhookDeliveries(at: Date(), lease: Self.lease, limit: batchSize)
        await withTaskGroup(of: Void.self) { group in
            for delivery in claimed { group.addTask { await deliver(delivery) } }
        }
        return claimed.count
    }

    /// One attempt and its record; a record that cannot be written leaves the claim to lapse.
    private func deliver(_ delivery: ClaimedWebhookDelivery) async {
        let record = await webhooks.attempt(delivery, through: transport)
        guard !stopping.isStopped else { return }
        do {
            try await webhooks.store.recordWebhookAttempt(record)
        } catch {
            logger.warning(
                "could not record a webhook attempt; it is made again when its claim lapses",
                metadata: ["webhook.id": "\(record.deliveryID)", "error": "\(String(reflecting: error))"]
            )
            return
        }
        log(record, delivery)
    }

    private func log(_ record: WebhookAttemptRecord, _ claimed: ClaimedWebhookDelivery) {
        // A success is logged at debug: skip building its metadata when that is off.
        if case .succeeded = record.next, logger.logLevel > .debug { return }
        var metadata: Logger.Metadata = [
            "webhook.id": "\(record.deliveryID)", "webhook.endpoint": "\(record.endpointID)",
            "webhook.event": "\(claimed.delivery.eventType.rawValue)", "webhook.attempt": "\(claimed.delivery.attempts + 1)",
        ]
        if let status = record.statusCode { metadata["webhook.status"] = "\(status)" }
        if let error = record.error { metadata["webhook.error"] = "\(error)" }
        switch record.next {
        case .succeeded: logger.debug("webhook delivered", metadata: metadata)
        case .retry(let at):
            metadata["webhook.retry_at"] = "\(at.auditTimestamp)"
            logger.info("webhook delivery failed; will retry", metadata: metadata)
        case .failed: logger.warning("webhook delivery failed for good", metadata: metadata)
        }
        if let reason = record.disableEndpoint {
            logger.warning("webhook endpoint disabled", metadata: ["webhook.endpoint": "\(record.endpointID)", "reason": "\(reason)"])
        }
    }
}

/// Whether the dispatcher has stopped.
private final class StopFlag: Sendable {
    private let stopped = Mutex(false)
    var isStopped: Bool { stopped.withLock { $0 } }
    func stop() { stopped.withLock { $0 = true } }
}

/// Lets a repeated warning through at most every ten seconds.
private final class WarningThrottle: Sendable {
    private let last = Mutex(ContinuousClock.Instant?.none)

    func mayWarn(now: ContinuousClock.Instant = .now) -> Bool {
        last.withLock { last in
            if let previous = last, now - previous < .seconds(10) { return false }
            last = now
            return true
        }
    }
}

/// How many attempts run now, in all and per endpoint, shared with the tasks that make them.
private final class InFlightCount: Sendable {
    private let counts = Mutex((total: 0, byEndpoint: [WebhookEndpointID: Int]()))

    /// How many more attempts may start, and the endpoints with more than `perEndpoint` running,
    /// which the next claim leaves out (it may take `perEndpoint` more of any other).
    func room(total: Int, perEndpoint: Int) -> (Int, Set<WebhookEndpointID>) {
        counts.withLock { counts in
            (total - counts.total, Set(counts.byEndpoint.filter { $0.value > perEndpoint }.keys))
        }
    }

    func add(_ endpoint: WebhookEndpointID) {
        counts.withLock { counts in
            counts.total += 1
            counts.byEndpoint[endpoint, default: 0] += 1
        }
    }

    /// - Returns: Whether this made room that the last claim lacked: the endpoint is claimable
    ///   again, or the dispatcher was full.
    func remove(_ endpoint: WebhookEndpointID, total: Int, perEndpoint: Int) -> Bool {
        counts.withLock { counts in
            let wasFull = counts.total >= total
            counts.total -= 1
            let left = counts.byEndpoint[endpoint, default: 1] - 1
            counts.byEndpoint[endpoint] = left == 0 ? nil : left
            return wasFull || left == perEndpoint
        }
    }
}

/// Posts deliveries with AsyncHTTPClient: bound to the egress address, redirects not followed,
/// every attempt within its timeout.
struct HTTPClientWebhookTransport: WebhookTransport {
    let client: HTTPClient

    /// - Parameter localAddress: `KEYWAY_EGRESS_BIND`, the source address of every connection.
    init(localAddress: String?) {
        var configuration = HTTPClient.Configuration(
            redirectConfiguration: .disallow,
            timeout: .init(connect: .seconds(5), read: .seconds(Int64(WebhookRetrySchedule.timeout))),
            decompression: .disabled
        )
        configuration.localAddress = localAddress
        // Each attempt resolves the name again before it connects (the SSRF check); a pooled
        // connection would skip that, so connections are not kept between attempts for long.
        configuration.connectionPool = .init(idleTimeout: .seconds(5))
        // And not for ever while busy: a connection that won the DNS-rebinding race once is
        // replaced after this many requests (docs/webhooks.md).
        configuration.maximumUsesPerConnection = 50
        client = HTTPClient(eventLoopGroupProvider: .singleton, configuration: configuration)
    }

    /// The longest response body read; the rest is dropped.
    static let responseBodyLimit = 64 * 1024

    func post(url: URL, headers: [(String, String)], body: String, timeout: TimeInterval) async throws -> WebhookResponse {
        var request = HTTPClientRequest(url: url.absoluteString)
        request.method = .POST
        for (name, value) in headers { request.headers.add(name: name, value: value) }
        request.body = .bytes(ByteBuffer(string: body))
        do {
            let response = try await client.execute(request, timeout: .milliseconds(Int64(timeout * 1000)))
            // Read a little of the answer so the connection can be reused; a receiver's long body is not
            // ours to keep. The caller's deadline bounds this read too.
            var read = 0
            for try await chunk in response.body {
                read += chunk.readableBytes
                if read >= Self.responseBodyLimit { break }
            }
            return WebhookResponse(
                statusCode: Int(response.status.code),
                retryAfter: response.headers.first(name: "retry-after").flatMap { Self.retryAfter($0) }
            )
        } catch {
            throw Self.reason(error)
        }
    }

    /// What went wrong, in a few words: never the address, the port or the system's message,
    /// which would tell a tenant about the network behind their URL.
    static func reason(_ error: any Error) -> WebhookTransportError {
        if let error = error as? HTTPClientError {
            switch error {
            case .connectTimeout, .readTimeout, .writeTimeout, .deadlineExceeded:
                return WebhookTransportError("No answer in time.")
            case .remoteConnectionClosed:
                return WebhookTransportError("The connection closed before an answer.")
            case .cancelled:
                return WebhookTransportError("The attempt was cancelled.")
            default:
                break
            }
        }
        if error is NIOSSLError { return WebhookTransportError("The TLS handshake failed.") }
        if error is CancellationError { return WebhookTransportError("The attempt was cancelled.") }
        return WebhookTransportError("Could not connect.")
    }

    /// `Retry-After` as delta-seconds or an HTTP date, in seconds from now.
    static func retryAfter(_ value: String, now: Date = Date()) -> TimeInterval? {
        let trimmed = value.trimmingCharacters(in: .whitespaces)
        if let seconds = Int(trimmed), seconds >= 0 { return TimeInterval(seconds) }
        let formatter = DateFormatter()
        formatter.locale = Locale(identifier: "en_US_POSIX")
        formatter.timeZone = TimeZone(identifier: "GMT")
        formatter.dateFormat = "EEE, dd MMM yyyy HH:mm:ss zzz"
        return formatter.date(from: trimmed).map { max(0, $0.timeIntervalSince(now)) }
    }

    func shutdown() async {
        try? await client.shutdown()
    }
}
