import Foundation
import GRDB
import KeywayCore
import Synchronization
import Testing

@testable import KeywaySQLite

/// What only the SQLite adapter has: its file, its schema and its migrations.
@Suite struct SQLiteStoreTests {
    /// The point reader runs on connections of its own: it must see every commit at once,
    /// and between lookups hold no read transaction that would keep the WAL from being checkpointed.
    @Test func pointReadsSeeWritesAtOnceAndHoldNoSnapshot() async throws {
        let path = temporaryDatabasePath()
        let store = try KeywaySQLiteStore(path: path, migrate: true)
        let account = try await store.createAccount(name: "Acme", at: Date())
        let development = EnvironmentID(accountID: account.id, environment: .development)
        let generated = GeneratedSecretKey.generate(for: .development)
        #expect(try await store.user("ada", in: development) == nil)
        #expect(try await store.secretKey(digest: generated.digest) == nil)

        let ada = try await store.createUser(try NewUser(username: "ada", fullName: nil), in: development, at: Date())
        _ = try await store.insertKeyRevokingPrevious(generated, for: development, createdBy: "t", at: Date())
        #expect(try await store.user("ada", in: development) == ada)
        #expect(try await store.user(ada.id.rawValue, in: development) == ada)
        #expect(try await store.secretKey(digest: generated.digest)?.revokedAt == nil)

        let database = try DatabaseQueue(path: path)
        let checkpoint = try await database.writeWithoutTransaction { db in
            try Row.fetchOne(db, sql: "PRAGMA wal_checkpoint(TRUNCATE)")
        }
        // The first column is 1 when a reader's snapshot kept the checkpoint from finishing.
        #expect(checkpoint?[0] as Int? == 0)
    }

    @Test func anAcknowledgedWriteIsSyncedToDiskBeforeItIsAcknowledged() async throws {
        let store = try KeywaySQLiteStore(path: temporaryDatabasePath(), migrate: true)
        // 2 is FULL: the log is synced on every commit, so a commit survives power loss.
        #expect(try store.writerSynchronousMode() == 2)
    }

    /// How a server learns at once that the CLI (another process) revoked a key.
    @Test func aCommitByAnotherConnectionIsNoticedWithoutPolling() async throws {
        let path = temporaryDatabasePath()
        let server = try KeywaySQLiteStore(path: path, migrate: true)
        let cli = try KeywaySQLiteStore(path: path, migrate: true)
        let notifications = Mutex(0)
        let listening = Mutex(false)
        let listener = Task {
            await server.listenForRevocations {
                notifications.withLock { $0 += 1 }
            } onStateChange: { isListening in
                listening.withLock { $0 = isListening }
            }
        }
        defer { listener.cancel() }
        try await waitUntil { notifications.withLock { $0 } == 1 }  // the catch-up call on start
        #expect(listening.withLock { $0 })
        try await Task.sleep(for: .milliseconds(100))
        #expect(notifications.withLock { $0 } == 1, "nothing committed, nothing to read")

        _ = try await cli.createAccount(name: "Acme", at: Date())
        try await waitUntil { notifications.withLock { $0 } == 2 }
        listener.cancel()
        await listener.value
        #expect(!listening.withLock { $0 })
    }

    /// Another process recovering the WAL index (what a writer that crashed leaves behind)
    /// makes readers wait. The point reader runs on an event loop's thread, so it must give
    /// up quickly and let the pool wait on threads of its own.
    @Test func aPointReadOnABusyDatabaseFallsBackToThePoolInsteadOfBlocking() async throws {
        let path = temporaryDatabasePath()
        let store = try KeywaySQLiteStore(path: path, migrate: true)
        let account = try await store.createAccount(name: "Acme", at: Date())
        let development = EnvironmentID(accountID: account.id, environment: .development)
        let ada = try await store.createUser(try NewUser(username: "ada", fullName: nil), in: development, at: Date())
        let key = GeneratedSecretKey.generate(for: .development)
        _ = try await store.insertKeyRevokingPrevious(key, for: development, createdBy: "t", at: Date())
        #expect(try await store.user("ada", in: development) == ada)

        // In another process (SQLite shares one process's locks between its connections):
        // hold the WAL write and recovery locks and make the index header's two copies differ,
        // as a recovery in progress does.
        let holder = Process()
        holder.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        holder.arguments = [
            "python3", "-c",
            """
            import fcntl, mmap, os, sys
            fd = os.open(sys.argv[1], os.O_RDWR)
            for offset in (120, 122):  # WAL_WRITE_LOCK, WAL_RECOVER_LOCK
                fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB, 1, offset, 0)
            index = mmap.mmap(fd, 136)
            index[48] ^= 0xFF  # the header's second copy no longer matches the first
            print("held", flush=True)
            sys.stdin.readline()
            """,
            path + "-shm",
        ]
        let input = Pipe()
        let output = Pipe()
        holder.standardInput = input
        holder.standardOutput = output
        try holder.run()
        defer { if holder.isRunning { holder.terminate() } }
        let line = output.fileHandleForReading.availableData
        try #require(String(decoding: line, as: UTF8.self).contains("held"), "the lock holder did not start")

        let lookup = Task { try await store.user(ada.id.rawValue, in: development) }
        let keyLookup = Task { try await store.secretKey(digest: key.digest) }
        try await waitUntil(deadline: .seconds(5)) { store.pointReadFallbacks.load(ordering: .relaxed) == 2 }
        try input.fileHandleForWriting.write(contentsOf: Data("release\n".utf8))
        holder.waitUntilExit()
        #expect(try await lookup.value == ada, "the pool's read waits for the lock and then answers")
        #expect(try await keyLookup.value?.digest == key.digest)
        #expect(try await store.user("ada", in: development) == ada)
    }

    /// A change whose follow fails is not lost: the watcher starts over and catches up.
    @Test func aChangeWhoseFollowFailsIsFollowedAgain() async throws {
        let path = temporaryDatabasePath()
        let serverStore = try KeywaySQLiteStore(path: path, migrate: true)
        let flaky = CountingStore(serverStore)
        let cliStore = try KeywaySQLiteStore(path: path, migrate: true)
        let account = try await cliStore.createAccount(name: "Acme", at: Date())
        let development = EnvironmentID(accountID: account.id, environment: .development)
        let server = SecretKeys(store: flaky)
        let cli = SecretKeys(store: cliStore)
        let old = try await cli.generate(for: development, createdBy: "cli").key
        try await server.followRevocations()
        _ = try await server.authenticate(Substring(old.revealPlaintext()))  // cached as active

        let listener = Task {
            await serverStore.listenForRevocations {
                try await server.followRevocations()
            } onStateChange: { _ in
            }
        }
        defer { listener.cancel() }
        try await Task.sleep(for: .milliseconds(50))
        flaky.failRevocationReads(1)
        _ = try await cli.generate(for: development, createdBy: "cli")
        try await waitUntil(deadline: .seconds(5)) { flaky.failingRevocationReads == 0 }
        var refused = false
        let end = ContinuousClock.now + .seconds(5)
        while !refused, ContinuousClock.now < end {
            do { _ = try await server.authenticate(Substring(old.revealPlaintext())) } catch { refused = true }
            try await Task.sleep(for: .milliseconds(10))
        }
        #expect(refused, "the revocation whose first follow failed was followed again")
    }

    @Test func usernamesWrittenBeforeNFCAreNormalisedByTheMigration() async throws {
        let path = temporaryDatabasePath()
        let store = try KeywaySQLiteStore(path: path, migrate: true)
        let account = try await store.createAccount(name: "Acme", at: Date())
        let development = EnvironmentID(accountID: account.id, environment: .development)
        let twin = try await store.createUser(try NewUser(username: "zo\u{EB}", fullName: nil), in: development, at: Date())
        // Rows as the previous release wrote them, decomposed, and the migration not yet run.
        let database = try DatabaseQueue(path: path)
        try await database.write { db in
            for (id, username) in [("0000000100000000000000a1", "jose\u{301}"), ("0000000100000000000000a2", "zoe\u{308}")] {
                try db.execute(
                    sql: "INSERT INTO users (id, account_id, environment, username, full_name, created_at) VALUES (?, ?, 'development', ?, NULL, 1)",
                    arguments: [id, account.id.rawValue, username]
                )
            }
            try db.execute(sql: "DELETE FROM grdb_migrations WHERE identifier = 'v4: usernames in NFC'")
        }
        #expect(try await store.user("jos\u{E9}", in: development) == nil, "unreachable by name before the migration")

        _ = try KeywaySQLiteStore.migrate(path: path)
        let jose = try #require(try await store.user("jos\u{E9}", in: development))
        #expect(jose.id.rawValue == "0000000100000000000000a1")
        #expect(Array(jose.username.unicodeScalars) == Array("jos\u{E9}".unicodeScalars))
        #expect(try await store.user("zo\u{EB}", in: development) == twin, "an existing NFC name keeps its user")
        let shadowed = try #require(try await store.user("0000000100000000000000a2", in: development))
        #expect(Array(shadowed.username.unicodeScalars) == Array("zoe\u{308}".unicodeScalars), "its twin keeps its spelling; its id reaches it")
    }

    @Test func originsWrittenBeforeTheIndexAreKeptByTheMigration() async throws {
        let path = temporaryDatabasePath()
        let store = try KeywaySQLiteStore(path: path, migrate: true)
        let account = try await store.createAccount(name: "Acme", at: Date())
        let development = EnvironmentID(accountID: account.id, environment: .development)
        // The schema as the previous release left it: a newline-separated list per environment.
        let database = try DatabaseQueue(path: path)
        try await database.write { db in
            try db.execute(
                sql: """
                    DROP TABLE environment_origins;
                    DROP INDEX secret_keys_by_environment;
                    ALTER TABLE environments ADD COLUMN allowed_origins TEXT NOT NULL DEFAULT '';
                    DELETE FROM grdb_migrations WHERE identifier = 'v5: origins indexed, key generations by environment';
                    """
            )
            try db.execute(
                sql: "UPDATE environments SET allowed_origins = ? WHERE account_id = ? AND name = 'development'",
                arguments: ["https://app.acme.test\nhttp://localhost:3000", account.id.rawValue]
            )
        }

        _ = try KeywaySQLiteStore.migrate(path: path)
        #expect(try await store.allowedOrigins(for: development) == ["https://app.acme.test", "http://localhost:3000"])
        #expect(try await store.isOriginAllowedAnywhere("http://localhost:3000"))
        #expect(try await store.allowedOrigins(for: EnvironmentID(accountID: account.id, environment: .production)) == [])
    }

    @Test func theOutboxKeepsItsDeliveriesAndChecksThemWithoutATemporaryTable() async throws {
        let path = temporaryDatabasePath()
        let store = try KeywaySQLiteStore(path: path, migrate: true)
        let account = try await store.createAccount(name: "Acme", at: Date())
        let development = EnvironmentID(accountID: account.id, environment: .development)
        let endpoint = try await WebhookStoreTests.endpoint(store, development)
        // The table as v9 made it, holding what the previous release wrote, and v13 not yet run.
        let database = try DatabaseQueue(path: path)
        try await database.write { db in
            try db.execute(
                sql: """
                    DROP INDEX webhook_deliveries_due;
                    ALTER TABLE webhook_deliveries RENAME TO webhook_deliveries_v13;
                    CREATE TABLE webhook_deliveries (
                        endpoint_id TEXT NOT NULL REFERENCES webhook_endpoints(id) ON DELETE CASCADE,
                        id TEXT NOT NULL, event_type TEXT NOT NULL, payload TEXT NOT NULL, created_at INTEGER NOT NULL,
                        status TEXT NOT NULL CHECK (status IN ('pending', 'succeeded', 'failed')),
                        attempts INTEGER NOT NULL DEFAULT 0, next_attempt_at INTEGER, claim TEXT, claimed_until INTEGER,
                        last_attempt_at INTEGER, last_status_code INTEGER, last_error TEXT,
                        PRIMARY KEY (endpoint_id, id)
                    ) STRICT, WITHOUT ROWID;
                    DROP TABLE webhook_deliveries_v13;
                    CREATE INDEX webhook_deliveries_due ON webhook_deliveries(next_attempt_at) WHERE status = 'pending';
                    DELETE FROM grdb_migrations WHERE identifier = 'v13: the outbox rebuilt: status compared, due deliveries by endpoint';
                    """
            )
        }
        _ = try await store.createUser(try NewUser(username: "ada", fullName: "Ada"), in: development, at: Date())
        _ = try await store.createUser(try NewUser(username: "grace", fullName: nil), in: development, at: Date())
        // And a delivery with a different value in every column, attempted and failed.
        try await database.write { db in
            try db.execute(
                sql: """
                    INSERT INTO webhook_deliveries VALUES
                        (?, 'msg_0', 'key.revoked', '{"keyId":"k"}', 11, 'failed', 3, 22, 'claim', 33, 44, 410, 'gone')
                    """,
                arguments: [endpoint.id.rawValue]
            )
        }
        func everyColumn(_ db: Database) throws -> [String] {
            try Row.fetchAll(db, sql: "SELECT * FROM webhook_deliveries ORDER BY endpoint_id, id").map(\.description)
        }
        let before = try await database.read(everyColumn)
        #expect(before.count == 3)

        #expect(try KeywaySQLiteStore.migrate(path: path) == ["v13: the outbox rebuilt: status compared, due deliveries by endpoint"])
        // A connection opened now: one open before would explain with the schema it read then.
        let reopened = try DatabaseQueue(path: path)
        #expect(try await reopened.read(everyColumn) == before, "every delivery kept, column for column")
        #expect(try await WebhookStoreTests.deliveries(store, account.id).count == 3)
        try await reopened.read { db in
            let shape = try Row.fetchOne(db, sql: "SELECT strict, wr FROM pragma_table_list WHERE name = 'webhook_deliveries'")
            #expect(shape?["strict"] == 1 && shape?["wr"] == 1, "STRICT, WITHOUT ROWID")
            let parent = try Row.fetchOne(db, sql: #"SELECT "table", on_delete FROM pragma_foreign_key_list('webhook_deliveries')"#)
            #expect(parent?["table"] == "webhook_endpoints" && parent?["on_delete"] == "CASCADE")
            #expect(
                try String.fetchAll(db, sql: "SELECT name FROM pragma_index_info('sqlite_autoindex_webhook_deliveries_1')") == ["endpoint_id", "id"]
            )
            #expect(
                try String.fetchOne(db, sql: "SELECT sql FROM sqlite_master WHERE name = 'webhook_deliveries_due'")
                    == "CREATE INDEX webhook_deliveries_due ON webhook_deliveries(endpoint_id, next_attempt_at) WHERE status = 'pending'"
            )
        }
        try await reopened.read { db in
            let insert = """
                EXPLAIN INSERT INTO webhook_deliveries (id, endpoint_id, event_type, payload, created_at, status, attempts, next_attempt_at)
                VALUES ('msg_x', ?, 'user.created', '{}', 1, 'pending', 0, 1)
                """
            let program = try Row.fetchAll(db, sql: insert, arguments: [endpoint.id.rawValue]).map { $0["opcode"] as String }
            #expect(!program.isEmpty && !program.contains("OpenEphemeral"), "an outbox row is checked with comparisons")
        }
        await #expect(throws: DatabaseError.self, "the status is still checked") {
            try await database.write { db in
                try db.execute(sql: "UPDATE webhook_deliveries SET status = 'lost'")
            }
        }
    }

    /// Waits for `condition`, failing after a deadline far above any expected delay.
    func waitUntil(deadline: Duration = .seconds(10), _ condition: () -> Bool) async throws {
        let clock = ContinuousClock()
        let end = clock.now + deadline
        while !condition() {
            guard clock.now < end else {
                Issue.record("the condition did not hold within \(deadline)")
                return
            }
            try await Task.sleep(for: .milliseconds(5))
        }
    }

    @Test func theSchemaAllowsOneActiveKeyPerEnvironment() async throws {
        let path = temporaryDatabasePath()
        let store = try KeywaySQLiteStore(path: path, migrate: true)
        let account = try await store.createAccount(name: "Acme", at: Date())
        _ = try await store.insertKeyRevokingPrevious(
            .generate(for: .development),
            for: .init(accountID: account.id, environment: .development),
            createdBy: "t",
            at: Date()
        )

        let database = try DatabaseQueue(path: path)
        await #expect(throws: DatabaseError.self) {
            try await database.write { db in
                try db.execute(
                    sql: """
                        INSERT INTO secret_keys (id, account_id, environment, digest, hint, created_at, created_by)
                        VALUES ('key_second', ?, 'development', randomblob(32), 'kw_dev_…x', 0, 'sneaky')
                        """,
                    arguments: [account.id.rawValue]
                )
            }
        }
    }

    /// Foreign keys are a setting of each connection, not of the file: the store's own
    /// writer must refuse an orphan, so a user is never created for an account that is gone.
    @Test func theDatabaseUsesWALAndForeignKeys() async throws {
        let path = temporaryDatabasePath()
        let store = try KeywaySQLiteStore(path: path, migrate: true)
        let database = try DatabaseQueue(path: path)
        let mode = try await database.read { try String.fetchOne($0, sql: "PRAGMA journal_mode") }
        #expect(mode == "wal")

        // The store inserts users without looking for their environment first: only the
        // foreign key keeps one from pointing at an account that does not exist.
        let nowhere = EnvironmentID(accountID: AccountID(rawValue: "acct_none"), environment: .development)
        let refused = await #expect(throws: DatabaseError.self) {
            _ = try await store.createUser(try NewUser(username: "orphan", fullName: nil), in: nowhere, at: Date())
        }
        #expect(refused?.resultCode == .SQLITE_CONSTRAINT)
        await #expect(throws: DatabaseError.self) {
            _ = try await store.createUsers([try NewUser(username: "orphans", fullName: nil)], in: nowhere, at: Date())
        }
        let orphans = try await database.read { try Int.fetchOne($0, sql: "SELECT count(*) FROM users") }
        #expect(orphans == 0)
    }

    @Test func migratingTwiceAppliesNothingTheSecondTime() throws {
        let path = temporaryDatabasePath()
        let first = try KeywaySQLiteStore.migrate(path: path)
        #expect(first.count >= 1)
        #expect(try KeywaySQLiteStore.migrate(path: path).isEmpty)
    }

    @Test func anUnmigratedDatabaseIsRefusedWhenMigrationIsOff() throws {
        #expect(throws: SchemaError.self) { try KeywaySQLiteStore(path: temporaryDatabasePath(), migrate: false) }
    }

    @Test func everythingSurvivesReopeningTheFile() async throws {
        let path = temporaryDatabasePath()
        let environment: EnvironmentID
        let oldKey: GeneratedSecretKey
        let currentKey: GeneratedSecretKey
        do {
            let store = try KeywaySQLiteStore(path: path, migrate: true)
            let account = try await store.createAccount(name: "Acme", at: Date())
            environment = EnvironmentID(accountID: account.id, environment: .development)
            let keys = SecretKeys(store: store)
            oldKey = try await keys.generate(for: environment, createdBy: "t").key
            currentKey = try await keys.generate(for: environment, createdBy: "t").key
            _ = try await store.createUser(try NewUser(username: "alice", fullName: "Alice"), in: environment, at: Date())
        }
        let reopened = try KeywaySQLiteStore(path: path, migrate: false)
        let keys = SecretKeys(store: reopened)
        #expect(try await keys.authenticate(Substring(currentKey.revealPlaintext())).environmentID == environment)
        let error = await #expect(throws: KeywayError.self) { try await keys.authenticate(Substring(oldKey.revealPlaintext())) }
        #expect(error?.code == .revokedAPIKey)
        #expect(try await reopened.user("alice", in: environment)?.fullName == "Alice")
    }

    @Test func noPlaintextKeyIsWrittenToTheDatabaseFile() async throws {
        let path = temporaryDatabasePath()
        let store = try KeywaySQLiteStore(path: path, migrate: true)
        let account = try await store.createAccount(name: "Acme", at: Date())
        let keys = SecretKeys(store: store)
        let key = try await keys.generate(for: .init(accountID: account.id, environment: .production), createdBy: "t").key
        let secret = Data(key.revealPlaintext().utf8)
        let secretBody = Data(key.revealPlaintext().dropFirst(8).prefix(20).utf8)
        for file in [path, path + "-wal"] where FileManager.default.fileExists(atPath: file) {
            let contents = try Data(contentsOf: URL(fileURLWithPath: file))
            #expect(contents.range(of: secret) == nil)
            #expect(contents.range(of: secretBody) == nil)
        }
    }
}
