package import Foundation
import GRDB
public import KeywayCore
package import Synchronization

/// ``KeywayStore`` on an embedded SQLite file: the default for one instance.
///
/// WAL mode, so readers never wait for the writer; foreign keys on; writes in
/// IMMEDIATE transactions, so two processes on one file queue rather than fail.
public final class KeywaySQLiteStore: KeywayStore {
    let database: DatabasePool
    let pointReader: SQLitePointReader
    let makeUserID: @Sendable (Date) -> UserID
    /// `createUser` calls that arrive together share a transaction (and a sync to disk).
    let userCreations: GroupCommit<UserCreation, UserInsertion>
    /// Webhook attempts finished together are recorded in one transaction: a sync to disk per
    /// attempt would take the writer from the requests (bench/webhooks).
    let webhookAttempts: GroupCommit<WebhookAttemptRecord, Void>
    /// Point reads that found the database busy and went through the pool instead.
    package let pointReadFallbacks = Atomic<Int>(0)

    /// Opens (creating if needed) the database at `path`.
    ///
    /// - Parameters:
    ///   - path: The SQLite file. Its folder is created when missing.
    ///   - migrate: Whether to apply pending migrations now; when `false` an
    ///     out-of-date schema makes this throw ``SchemaError``.
    /// - Throws: When the file cannot be opened or its schema is unusable.
    public convenience init(path: String, migrate: Bool) throws {
        try self.init(path: path, migrate: migrate, makeUserID: UserID.generate(at:))
    }

    /// - Parameter makeUserID: Draws new users' identifiers; tests pass one that collides on purpose.
    package init(path: String, migrate: Bool, makeUserID: @escaping @Sendable (Date) -> UserID) throws {
        self.makeUserID = makeUserID
        let database = try Self.open(path)
        self.database = database
        self.userCreations = GroupCommit(maximumBatch: 500) { creations in
            try await database.write { db in
                try creations.map { creation in
                    try Self.insert(
                        creation.user,
                        in: creation.environmentID,
                        at: creation.date,
                        makeUserID: makeUserID,
                        drawn: creation.drawn,
                        db: db
                    )
                }
            }
        }
        self.webhookAttempts = GroupCommit(maximumBatch: 500) { records in
            try await database.write { db in try records.map { try Self.record($0, db: db) } }
        }
        self.pointReader = SQLitePointReader(path: path)
        if migrate {
            try KeywaySQLiteSchema.migrator.migrate(database)
        } else {
            try KeywaySQLiteSchema.requireCurrent(database)
        }
    }

    private static func open(_ path: String) throws -> DatabasePool {
        let folder = URL(fileURLWithPath: path).deletingLastPathComponent()
        try FileManager.default.createDirectory(at: folder, withIntermediateDirectories: true)
        var configuration = Configuration()
        configuration.foreignKeysEnabled = true
        // Another process (the CLI, a second writer) may hold the write lock briefly.
        configuration.busyMode = .timeout(10)
        configuration.label = "keyway"
        let pool = try DatabasePool(path: path, configuration: configuration)
        // GRDB puts a WAL writer on synchronous=NORMAL, where a commit survives a crash of
        // the process but not of the machine. An acknowledged key, revocation or user must
        // survive power loss too: sync the log on every commit. Set after the pool opens,
        // so GRDB's own setting comes first.
        try pool.writeWithoutTransaction { db in try db.execute(sql: "PRAGMA synchronous = FULL") }
        return pool
    }

    /// The writer's `PRAGMA synchronous` (2 is FULL), for tests.
    package func writerSynchronousMode() throws -> Int {
        try database.writeWithoutTransaction { db in try Int.fetchOne(db, sql: "PRAGMA synchronous") ?? -1 }
    }

    /// Applies pending migrations to the database at `path`, creating it if needed.
    /// - Returns: The identifiers of the migrations that were applied, oldest first.
    /// - Throws: ``SchemaError`` when a newer Keyway wrote the database.
    public static func migrate(path: String) throws -> [String] {
        let database = try open(path)
        if try database.read({ try KeywaySQLiteSchema.migrator.hasBeenSuperseded($0) }) {
            throw SchemaError("The database was written by a newer Keyway; upgrade Keyway to use it.")
        }
        let before = try database.read { try KeywaySQLiteSchema.migrator.appliedIdentifiers($0) }
        try KeywaySQLiteSchema.migrator.migrate(database)
        let after = try database.read { try KeywaySQLiteSchema.migrator.appliedIdentifiers($0) }
        return KeywaySQLiteSchema.migrator.migrations.filter { after.contains($0) && !before.contains($0) }
    }

    // MARK: Operations

    public func requireCurrentSchema() async throws {
        try KeywaySQLiteSchema.requireCurrent(database)
    }

    public func checkHealth() async throws {
        _ = try await database.read { db in try Int.fetchOne(db, sql: "SELECT 1") }
    }
}
