import Foundation
import KeywayCore

// MARK: Revocations by other processes

/// ``RevocationNotifying``, which every ``KeywayStore`` is.
extension KeywaySQLiteStore {
    /// How often the store asks SQLite whether another connection committed.
    /// Bounds how long a key revoked by another process (the CLI) stays accepted.
    public static let changeCheckInterval: Duration = .milliseconds(10)

    /// Calls `onNotification` within ``changeCheckInterval`` of any commit by another
    /// connection — the CLI, another process, or this one's own writers — by reading
    /// `PRAGMA data_version`, which costs a read of shared memory.
    public func listenForRevocations(
        onNotification: @escaping @Sendable () async throws -> Void,
        onStateChange: @escaping @Sendable (Bool) -> Void
    ) async {
        await listenUntilCancelled(onStateChange: onStateChange) { connected in
            var watcher = try pointReader.makeChangeWatcher()
            connected()
            while true {
                // The first call reports a change, so what happened before is caught up on.
                if try watcher.hasChanged() {
                    // When it fails, this watcher is dropped: the next one starts by catching up.
                    try await onNotification()
                }
                try await Task.sleep(for: Self.changeCheckInterval)
            }
        }
    }
}
