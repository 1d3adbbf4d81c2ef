import Foundation
import KeywayCore
import Logging
import ServiceLifecycle

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
        await withTaskGroup(of: Void.self) { group in
            group.addTask {
                await repeatUntilShutdown(every: revocationPollInterval) {
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
