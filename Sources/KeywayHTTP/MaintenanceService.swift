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
        // Last-used times gathered since the last flush would otherwise be lost.
        do {
            try await keys.flushUsage()
        } catch {
            logger.warning("could not record key usage at shutdown", metadata: ["error": "\(String(reflecting: error))"])
        }
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
