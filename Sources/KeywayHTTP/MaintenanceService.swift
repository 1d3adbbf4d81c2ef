import Foundation
import KeywayCore
import Logging
import ServiceLifecycle
import Synchronization

/// Background work, off the request path: follows key revocations made by
/// other processes, writes keys' last-used times, deletes expired dashboard
/// sessions, reads rate limits changed elsewhere and shares rate-limit counts.
struct MaintenanceService: Service {
    let keys: SecretKeys
    /// Refreshed wherever key revocations are followed, so a revoked service token has their bound.
    let serviceTokens: ServiceTokens
    let store: any KeywayStore
    let rateLimits: RateLimits
    /// Where instances share their rate-limit counts (PostgreSQL); `nil` on SQLite.
    let rateLimitExchange: (any RateLimitExchange)?
    let revocationPollInterval: Duration
    let usageFlushInterval: Duration
    /// The most the last flush of last-used times may take at shutdown.
    let shutdownTimeout: Duration
    let logger: Logger
    /// How often expired dashboard sessions are deleted; tests shorten it.
    var sessionPurgeInterval = Self.defaultSessionPurgeInterval
    /// How long audit entries are kept (`KEYWAY_AUDIT_RETENTION_DAYS`).
    var auditRetentionDays = ServerConfiguration.defaultAuditRetentionDays
    /// How often ended graces are written to the audit log; tests shorten it.
    var graceAuditInterval: Duration = .seconds(1)

    /// How long finished webhook deliveries are kept: 30 days.
    static let webhookDeliveriesKept: TimeInterval = 30 * 86_400

    /// Hourly: an expired session already opens nothing, deleting it only keeps the table small.
    static let defaultSessionPurgeInterval: Duration = .seconds(3600)

    func run() async throws {
        let listening = ListenerState()
        await withTaskGroup(of: Void.self) { group in
            group.addTask {
                await cancelWhenGracefulShutdown {
                    await store.listenForRevocations {
                        do { try await followRevocations() } catch {
                            logger.warning("could not follow revocations", metadata: ["error": "\(String(reflecting: error))"])
                            throw error
                        }
                    } onStateChange: { isListening in
                        listening.set(isListening)
                    }
                }
            }
            group.addTask {
                await Self.repeatUntilShutdown(every: revocationPollInterval) {
                    // While notifications arrive, polling is only a slow safety net.
                    guard listening.shouldPoll() else { return }
                    try await followRevocations()
                } onFailure: { error in
                    logger.warning("could not check for revoked keys", metadata: ["error": "\(String(reflecting: error))"])
                }
            }
            group.addTask {
                await Self.repeatUntilShutdown(every: usageFlushInterval) {
                    try await keys.flushUsage()
                } onFailure: { error in
                    logger.warning("could not record key usage", metadata: ["error": "\(String(reflecting: error))"])
                }
            }
            group.addTask {
                // One read of a version row; the limits themselves only when it moved.
                await Self.repeatUntilShutdown(every: revocationPollInterval) {
                    try await rateLimits.refresh()
                } onFailure: { error in
                    logger.warning("could not read rate limits", metadata: ["error": "\(String(reflecting: error))"])
                }
            }
            group.addTask {
                await Self.repeatUntilShutdown(every: .seconds(10)) {
                    rateLimits.prune()
                    try await rateLimitExchange?.deleteRateLimitCounts(olderThan: Self.rateLimitCountsKept)
                } onFailure: { error in
                    logger.warning("could not delete old rate-limit counts", metadata: ["error": "\(String(reflecting: error))"])
                }
            }
            if let rateLimitExchange {
                group.addTask {
                    await Self.repeatUntilShutdown(every: Self.rateLimitExchangeInterval) {
                        try await rateLimits.exchange(through: rateLimitExchange)
                    } onFailure: { error in
                        logger.warning("could not share rate-limit counts", metadata: ["error": "\(String(reflecting: error))"])
                    }
                }
            }
            group.addTask {
                await Self.repeatUntilShutdown(every: sessionPurgeInterval) {
                    try await store.deleteExpiredSessions(before: Date())
                    // Hourly too: retention is counted in days.
                    let cutoff = Date().addingTimeInterval(-Double(auditRetentionDays) * 86_400)
                    let deleted = try await store.deleteAuditEntries(before: cutoff)
                    if deleted > 0 { logger.info("old audit entries deleted", metadata: ["count": "\(deleted)"]) }
                    // Finished deliveries are kept for the dashboard's list, a month.
                    _ = try await store.deleteWebhookDeliveries(before: Date().addingTimeInterval(-Self.webhookDeliveriesKept))
                } onFailure: { error in
                    logger.warning("could not delete expired sessions or old audit entries", metadata: ["error": "\(String(reflecting: error))"])
                }
            }
            group.addTask {
                // A grace ends by the clock, with nothing written: its `key.expired` entry is written
                // here, once, by whichever instance comes first, within a second of the end.
                await Self.repeatUntilShutdown(every: graceAuditInterval) {
                    _ = try await store.recordExpiredGraces(at: Date())
                    // And key.expiring an hour before the end, the same way: once, by the first instance.
                    _ = try await store.recordExpiringGraces(at: Date())
                } onFailure: { error in
                    logger.warning("could not record ended grace periods", metadata: ["error": "\(String(reflecting: error))"])
                }
            }
        }
        await flushUsageAtShutdown()
    }

    /// How often instances on PostgreSQL share rate-limit counts: the lag behind which one
    /// instance does not yet see another's requests (see docs/architecture.md, "Rate limits").
    static let rateLimitExchangeInterval: Duration = .milliseconds(50)
    /// How long shared counts are kept (milliseconds); exchanges read back two seconds.
    static let rateLimitCountsKept: Int64 = 10_000

    /// Key revocations and service tokens, read together on every notification and poll.
    private func followRevocations() async throws {
        try await keys.followRevocations()
        try await serviceTokens.refresh()
    }

    /// Writes the last-used times gathered since the last flush, or gives up on them
    /// after ``shutdownTimeout``: they are best effort, and a database that is gone
    /// (a failover, a dead host) must not keep the process from exiting.
    private func flushUsageAtShutdown() async {
        let pending = keys.pendingUsageCount
        guard pending > 0 else { return }
        let timeout = shutdownTimeout
        let outcome = await Self.outcome(within: timeout) { try await keys.flushUsage() }
        let reason: String
        switch outcome {
        case .written:
            logger.info("recorded keys' last-used times at shutdown", metadata: ["usage.recorded": "\(pending)"])
            return
        case .failed(let error):
            reason = "\(String(reflecting: error))"
        case .timedOut:
            reason = "not written within \(timeout)"
        case .cancelled:
            reason = "the shutdown was cancelled"
        }
        logger.warning(
            "abandoned keys' last-used times at shutdown",
            metadata: ["usage.abandoned": "\(pending)", "reason": "\(reason)"]
        )
    }

    /// Runs `work` every `interval` until a graceful shutdown, which ends the loop at once:
    /// the wait is cancelled, and work in flight is abandoned rather than awaited.
    ///
    /// Why not await the work: with the database gone (a failover), a transaction that
    /// loses its connection mid-statement may never answer — PostgresNIO's ROLLBACK on a
    /// closed connection does not — and a task group waiting for it would hold the
    /// shutdown past its bound until the process is aborted. Abandoned work is cancelled
    /// (closing its connection) and ends on its own or with the process; none of it is
    /// more than best effort that another round or instance redoes.
    /// - Parameter waker: Ends a wait early when it is woken (the dispatcher, when an attempt ends).
    static func repeatUntilShutdown(
        every interval: Duration,
        waker: Waker? = nil,
        _ work: @escaping @Sendable () async throws -> Void,
        onFailure: @escaping @Sendable (any Error) -> Void
    ) async {
        while !Task.isCancelled {
            let waited = await cancelWhenGracefulShutdown {
                guard let waker else { return (try? await Task.sleep(for: interval)) != nil }
                await waker.wait(upTo: interval)
                return !Task.isCancelled
            }
            guard waited, !Task.isCancelled else { return }
            switch await outcome(within: nil, endingAtGracefulShutdown: true, work) {
            case .written: continue
            case .failed(let error): onFailure(error)
            case .timedOut, .cancelled: return
            }
        }
    }
}

enum FlushOutcome: Sendable {
    case written
    case failed(any Error)
    case timedOut
    case cancelled
}

extension MaintenanceService {
    /// Runs `work` and answers when it ends, after `timeout`, when the caller is cancelled,
    /// or — if `endingAtGracefulShutdown` — when a graceful shutdown begins, whichever comes
    /// first, without waiting for `work` to let go.
    ///
    /// Why not a task group: a group waits for all its children, and a query stuck on a
    /// database that is gone may ignore cancellation (a pool lease, a connection attempt);
    /// the service would then outlive the shutdown deadline and the process be aborted.
    /// `work` is cancelled once answered and ends on its own, or with the process.
    static func outcome(
        within timeout: Duration?,
        endingAtGracefulShutdown: Bool = false,
        _ work: @escaping @Sendable () async throws -> Void
    ) async -> FlushOutcome {
        let answer = FirstAnswer()
        let worker = Task {
            do {
                try await work()
                answer.give(.written)
            } catch {
                answer.give(.failed(error))
            }
        }
        let timer = timeout.map { timeout in
            Task {
                try? await Task.sleep(for: timeout)
                answer.give(.timedOut)
            }
        }
        let outcome = await withGracefulShutdownHandler {
            await withTaskCancellationHandler {
                await withCheckedContinuation { answer.await($0) }
            } onCancel: {
                answer.give(.cancelled)
            }
        } onGracefulShutdown: {
            if endingAtGracefulShutdown { answer.give(.cancelled) }
        }
        worker.cancel()
        timer?.cancel()
        return outcome
    }
}

/// The first of several racing answers; the others are dropped.
private final class FirstAnswer: Sendable {
    private let state = Mutex<(waiter: CheckedContinuation<FlushOutcome, Never>?, answer: FlushOutcome?)>((nil, nil))

    func give(_ outcome: FlushOutcome) {
        let waiter = state.withLock { state -> CheckedContinuation<FlushOutcome, Never>? in
            guard state.answer == nil else { return nil }
            state.answer = outcome
            defer { state.waiter = nil }
            return state.waiter
        }
        waiter?.resume(returning: outcome)
    }

    func await(_ waiter: CheckedContinuation<FlushOutcome, Never>) {
        let early = state.withLock { state -> FlushOutcome? in
            if state.answer == nil { state.waiter = waiter }
            return state.answer
        }
        if let early { waiter.resume(returning: early) }
    }
}

/// Whether the revocation listener is connected, and when polling last ran.
final class ListenerState: Sendable {
    /// How often to poll anyway while notifications arrive.
    static let safetyNetInterval: TimeInterval = 10
    private let state = Mutex((listening: false, lastPoll: Date.distantPast))

    func set(_ listening: Bool) {
        state.withLock { $0.listening = listening }
    }

    /// Poll on every tick while not listening; otherwise every ``safetyNetInterval``.
    func shouldPoll(now: Date = Date()) -> Bool {
        state.withLock { state in
            guard !state.listening || now.timeIntervalSince(state.lastPoll) >= Self.safetyNetInterval else { return false }
            state.lastPoll = now
            return true
        }
    }
}

/// A wait that ends after a time or when woken, whichever is first; a wake with nobody waiting
/// ends the next wait at once.
final class Waker: Sendable {
    private let state = Mutex((waiter: CheckedContinuation<Void, Never>?.none, woken: false))

    func wake() {
        let waiter = state.withLock { state -> CheckedContinuation<Void, Never>? in
            guard let waiter = state.waiter else {
                state.woken = true
                return nil
            }
            state.waiter = nil
            return waiter
        }
        waiter?.resume()
    }

    func wait(upTo duration: Duration) async {
        await withCheckedContinuation { (waiter: CheckedContinuation<Void, Never>) in
            let now = state.withLock { state -> Bool in
                if state.woken {
                    state.woken = false
                    return true
                }
                state.waiter = waiter
                return false
            }
            if now {
                waiter.resume()
            } else {
                // The timer's wake may come after an earlier one ended this wait: it then ends the
                // next wait early, which costs one look more and loses nothing.
                Task {
                    try? await Task.sleep(for: duration)
                    self.wake()
                }
            }
        }
    }
}
