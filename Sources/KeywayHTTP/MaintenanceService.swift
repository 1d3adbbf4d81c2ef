import Foundation
import KeywayCore
import Logging
import ServiceLifecycle
import Synchronization

/// Background work, off the request path: follows key revocations made by
/// other processes, writes keys' last-used times and deletes expired
/// dashboard sessions.
struct MaintenanceService: Service {
    let keys: SecretKeys
    let store: any KeywayStore
    let revocationPollInterval: Duration
    let usageFlushInterval: Duration
    /// The most the last flush of last-used times may take at shutdown.
    let shutdownTimeout: Duration
    let logger: Logger

    func run() async throws {
        let listening = ListenerState()
        await withTaskGroup(of: Void.self) { group in
            if let notifying = store as? any RevocationNotifying {
                group.addTask {
                    await cancelWhenGracefulShutdown {
                        await notifying.listenForRevocations {
                            do { try await keys.followRevocations() } catch {
                                logger.warning("could not follow revocations", metadata: ["error": "\(String(reflecting: error))"])
                                throw error
                            }
                        } onStateChange: { isListening in
                            listening.set(isListening)
                        }
                    }
                }
            }
            group.addTask {
                await repeatUntilShutdown(every: revocationPollInterval) {
                    // While notifications arrive, polling is only a slow safety net.
                    guard listening.shouldPoll() else { return }
                    try await keys.followRevocations()
                } onFailure: { error in
                    logger.warning("could not check for revoked keys", metadata: ["error": "\(String(reflecting: error))"])
                }
            }
            group.addTask {
                await repeatUntilShutdown(every: usageFlushInterval) {
                    try await keys.flushUsage()
                } onFailure: { error in
                    logger.warning("could not record key usage", metadata: ["error": "\(String(reflecting: error))"])
                }
            }
            group.addTask {
                await repeatUntilShutdown(every: .seconds(3600)) {
                    try await store.deleteExpiredSessions(before: Date())
                } onFailure: { error in
                    logger.warning("could not delete expired sessions", metadata: ["error": "\(String(reflecting: error))"])
                }
            }
        }
        await flushUsageAtShutdown()
    }

    /// Writes the last-used times gathered since the last flush, or gives up on them
    /// after ``shutdownTimeout``: they are best effort, and a database that is gone
    /// (a failover, a dead host) must not keep the process from exiting.
    private func flushUsageAtShutdown() async {
        let pending = keys.pendingUsageCount
        guard pending > 0 else { return }
        let timeout = shutdownTimeout
        let outcome = await withTaskGroup(of: FlushOutcome.self) { group in
            group.addTask {
                do {
                    try await keys.flushUsage()
                    return .written
                } catch {
                    return .failed(error)
                }
            }
            group.addTask {
                try? await Task.sleep(for: timeout)
                return .timedOut
            }
            let first = await group.next() ?? .timedOut
            // The store closes a connection whose query is cancelled, so a hung one lets go at once.
            group.cancelAll()
            return first
        }
        let reason: String
        switch outcome {
        case .written:
            logger.info("recorded keys' last-used times at shutdown", metadata: ["usage.recorded": "\(pending)"])
            return
        case .failed(let error):
            reason = "\(String(reflecting: error))"
        case .timedOut:
            reason = "not written within \(timeout)"
        }
        logger.warning(
            "abandoned keys' last-used times at shutdown",
            metadata: ["usage.abandoned": "\(pending)", "reason": "\(reason)"]
        )
    }

    private func repeatUntilShutdown(
        every interval: Duration,
        _ work: @escaping @Sendable () async throws -> Void,
        onFailure: @escaping @Sendable (any Error) -> Void
    ) async {
        await cancelWhenGracefulShutdown {
            while !Task.isCancelled {
                do {
                    try await Task.sleep(for: interval)
                } catch {
                    return
                }
                do {
                    try await work()
                } catch {
                    onFailure(error)
                }
            }
        }
    }
}

private enum FlushOutcome: Sendable {
    case written
    case failed(any Error)
    case timedOut
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
