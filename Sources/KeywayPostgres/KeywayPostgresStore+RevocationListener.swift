import Foundation
import KeywayCore
import Logging
import PostgresNIO

/// ``RevocationNotifying``, which every ``KeywayStore`` is.
extension KeywayPostgresStore {
    public func listenForRevocations(
        onNotification: @escaping @Sendable () async throws -> Void,
        onStateChange: @escaping @Sendable (Bool) -> Void
    ) async {
        await listenUntilCancelled(onStateChange: onStateChange) { error in
            logger.warning("revocation listener lost its connection; polling until it is back", metadata: ["error": "\(Self.reason(error))"])
        } _: { connected in
            // A dedicated connection: LISTEN must not share a pooled one.
            let connection = try await PostgresConnection.connect(
                configuration: singleConnection(applicationName: "keyway-listener"),
                id: 0,
                logger: logger
            )
            do {
                try await connection.listen(on: Self.revocationChannel) { notifications in
                    connected()
                    // Catch up on anything revoked while the listener was down.
                    try await onNotification()
                    // A notification whose follow fails ends the listening, as a lost connection
                    // does: polling takes over, and reconnecting catches up.
                    for try await _ in notifications { try await onNotification() }
                }
                try await connection.close()
            } catch {
                try? await connection.close()
                throw error
            }
            // The notification sequence ended: the connection is gone.
            throw CancellationError()
        }
    }
}
