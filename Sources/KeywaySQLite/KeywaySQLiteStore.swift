public import Foundation
import GRDB
public import KeywayCore
import Synchronization

/// ``KeywayStore`` on an embedded SQLite file: the default for one instance.
///
/// WAL mode, so readers never wait for the writer; foreign keys on; writes in
/// IMMEDIATE transactions, so two processes on one file queue rather than fail.
public final class KeywaySQLiteStore: KeywayStore {
    private let database: DatabasePool
    private let pointReader: SQLitePointReader
    private let makeUserID: @Sendable (Date) -> UserID
    /// `createUser` calls that arrive together share a transaction (and a sync to disk).
    private let userCreations: GroupCommit<UserCreation, UserInsertion>
    /// Point reads that found the database busy and went through the pool instead.
    let pointReadFallbacks = Atomic<Int>(0)

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
    init(path: String, migrate: Bool, makeUserID: @escaping @Sendable (Date) -> UserID) throws {
        self.makeUserID = makeUserID
        let database = try Self.open(path)
        self.database = database
        self.userCreations = GroupCommit(maximumBatch: 500) { creations in
            try await database.write { db in
                try creations.map { creation in
                    try Self.insert(creation.user, in: creation.environmentID, at: creation.date, makeUserID: makeUserID, db: db)
                }
            }
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
    func writerSynchronousMode() throws -> Int {
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

    // MARK: Accounts

    public func createAccount(name: String, at date: Date) async throws -> Account {
        let account = Account(id: .generate(), name: name, createdAt: date.keywayPrecision)
        try await database.write { db in try Self.insert(account, db: db) }
        return account
    }

    /// Inserts an account and its two environments.
    private static func insert(_ account: Account, db: Database) throws {
        try db.execute(
            sql: "INSERT INTO accounts (id, name, created_at) VALUES (?, ?, ?)",
            arguments: [account.id.rawValue, account.name, account.createdAt.keywayMilliseconds]
        )
        for environment in Environment.allCases {
            try db.execute(
                sql: "INSERT INTO environments (account_id, name, created_at) VALUES (?, ?, ?)",
                arguments: [account.id.rawValue, environment.rawValue, account.createdAt.keywayMilliseconds]
            )
        }
    }

    public func account(_ id: AccountID) async throws -> Account? {
        try await database.read { db in
            try Row.fetchOne(db, sql: "SELECT * FROM accounts WHERE id = ?", arguments: [id.rawValue]).map(Account.init(row:))
        }
    }

    public func accounts() async throws -> [Account] {
        try await database.read { db in
            try Row.fetchAll(db, sql: "SELECT * FROM accounts ORDER BY created_at, id").map(Account.init(row:))
        }
    }

    // MARK: Secret keys

    public func insertKeyRevokingPrevious(
        _ key: GeneratedSecretKey,
        for environmentID: EnvironmentID,
        replacing replacement: KeyReplacement,
        limit: KeyGenerationLimit?,
        createdBy: String,
        at date: Date
    ) async throws -> KeyGeneration {
        let record = SecretKeyRecord(new: key, for: environmentID, createdBy: createdBy, at: date)
        return try await database.write { db in
            guard try Bool.fetchOne(db, sql: "SELECT 1 FROM accounts WHERE id = ?", arguments: [environmentID.accountID.rawValue]) != nil
            else {
                throw KeywayError.accountNotFound(environmentID.accountID)
            }
            if let limit {
                // In the write transaction: one writer at a time, so racing generations cannot all pass.
                let newest = try Int64.fetchAll(
                    db,
                    sql: "SELECT created_at FROM secret_keys WHERE account_id = ? AND environment = ? ORDER BY created_at DESC LIMIT ?",
                    arguments: [environmentID.accountID.rawValue, environmentID.environment.rawValue, limit.count]
                ).map(Date.init(keywayMilliseconds:))
                if let retryAfter = limit.retryAfter(newestGenerations: newest, at: record.createdAt) {
                    throw KeywayError.tooManyKeyGenerations(limit: limit, retryAfter: retryAfter)
                }
            }
            let previous = try Row.fetchAll(
                db,
                sql: "SELECT id, digest FROM secret_keys WHERE account_id = ? AND environment = ? AND revoked_at IS NULL",
                arguments: [environmentID.accountID.rawValue, environmentID.environment.rawValue]
            )
            if case .only(let expected) = replacement, previous.map({ SecretKeyID(rawValue: $0["id"]) }) != (expected.map { [$0] } ?? []) {
                throw KeywayError.activeKeyChanged
            }
            var sequence = try Int64.fetchOne(db, sql: "SELECT COALESCE(MAX(revocation_sequence), 0) FROM secret_keys") ?? 0
            var revoked: [KeyRevocation] = []
            for row in previous {
                sequence += 1
                try db.execute(
                    sql: """
                        UPDATE secret_keys SET revoked_at = ?, revocation_reason = ?, revocation_sequence = ?
                        WHERE id = ?
                        """,
                    arguments: [record.createdAt.keywayMilliseconds, RevocationReason.regenerated.rawValue, sequence, row["id"] as String]
                )
                revoked.append(
                    KeyRevocation(sequence: sequence, digest: try row.digest("digest"), revokedAt: record.createdAt, reason: .regenerated)
                )
            }
            try db.execute(
                sql: """
                    INSERT INTO secret_keys (id, account_id, environment, digest, hint, created_at, created_by)
                    VALUES (?, ?, ?, ?, ?, ?, ?)
                    """,
                arguments: [
                    record.id.rawValue, environmentID.accountID.rawValue, environmentID.environment.rawValue,
                    Data(key.digest.bytes), record.hint, record.createdAt.keywayMilliseconds, createdBy,
                ]
            )
            return KeyGeneration(key: record, revoked: revoked)
        }
    }

    public func secretKey(digest: KeyDigest) async throws -> SecretKeyRecord? {
        do {
            return try pointReader.fetchOne(.secretKeyByDigest) {
                try $0.bind(digest.bytes, at: 1)
            } decode: { columns in
                try SecretKeyRecord(columns: columns)
            }
        } catch let error as DatabaseError where error.resultCode == .SQLITE_BUSY {
            pointReadFallbacks.add(1, ordering: .relaxed)
            return try await database.read { db in
                try Row.fetchOne(db, sql: SQLitePointReader.Query.secretKeyByDigest.sql, arguments: [Data(digest.bytes)])
                    .map(SecretKeyRecord.init(row:))
            }
        }
    }

    public func secretKeys(for accountID: AccountID) async throws -> [SecretKeyRecord] {
        try await database.read { db in
            try Row.fetchAll(
                db,
                sql: "SELECT * FROM secret_keys WHERE account_id = ? ORDER BY created_at DESC, id DESC",
                arguments: [accountID.rawValue]
            ).map(SecretKeyRecord.init(row:))
        }
    }

    public func revocations(after sequence: Int64, limit: Int) async throws -> [KeyRevocation] {
        try await database.read { db in
            try Row.fetchAll(
                db,
                sql: """
                    SELECT revocation_sequence, digest, revoked_at, revocation_reason FROM secret_keys
                    WHERE revocation_sequence > ? ORDER BY revocation_sequence LIMIT ?
                    """,
                arguments: [sequence, limit]
            ).map { row in
                KeyRevocation(
                    sequence: row["revocation_sequence"],
                    digest: try row.digest("digest"),
                    revokedAt: Date(keywayMilliseconds: row["revoked_at"]),
                    reason: RevocationReason(rawValue: row["revocation_reason"]) ?? .regenerated
                )
            }
        }
    }

    public func latestRevocationSequence() async throws -> Int64 {
        try await database.read { db in
            try Int64.fetchOne(db, sql: "SELECT COALESCE(MAX(revocation_sequence), 0) FROM secret_keys") ?? 0
        }
    }

    public func recordKeyUsage(_ lastUsed: [SecretKeyID: Date]) async throws {
        try await database.write { db in
            for (id, date) in lastUsed {
                try db.execute(
                    sql: "UPDATE secret_keys SET last_used_at = MAX(COALESCE(last_used_at, 0), ?) WHERE id = ?",
                    arguments: [date.keywayMilliseconds, id.rawValue]
                )
            }
        }
    }

    // MARK: Users

    public func createUser(_ user: NewUser, in environmentID: EnvironmentID, at date: Date) async throws -> User {
        try await userCreations.submit(UserCreation(user: user, environmentID: environmentID, date: date)).created(username: user.username)
    }

    public func createUsers(_ users: [NewUser], in environmentID: EnvironmentID, at date: Date) async throws -> BatchCreation {
        try await database.write { db in
            var result = BatchCreation()
            for user in users {
                result.record(try Self.insert(user, in: environmentID, at: date, makeUserID: makeUserID, db: db), username: user.username)
            }
            return result
        }
    }

    private struct UserCreation: Sendable {
        let user: NewUser
        let environmentID: EnvironmentID
        let date: Date
    }

    /// Inserts a user unless its username is taken or is a user's identifier, and never
    /// with an identifier that is a username. SQLite runs one writer at a time, so
    /// nothing can come between these checks and the insert.
    private static func insert(
        _ user: NewUser,
        in environmentID: EnvironmentID,
        at date: Date,
        makeUserID: (Date) -> UserID,
        db: Database
    ) throws -> UserInsertion {
        if try isUserID(user.username, in: environmentID, db: db) {
            return .usernameIsAUserID
        }
        var id = makeUserID(date)
        while try Bool.fetchOne(
            db,
            sql: "SELECT 1 FROM users WHERE account_id = ? AND environment = ? AND username = ?",
            arguments: [environmentID.accountID.rawValue, environmentID.environment.rawValue, id.rawValue]
        ) != nil {
            id = makeUserID(date)
        }
        let created = User(id: id, username: user.username, fullName: user.fullName, createdAt: date.keywayPrecision)
        try db.execute(
            sql: """
                INSERT INTO users (id, account_id, environment, username, full_name, created_at)
                VALUES (?, ?, ?, ?, ?, ?)
                ON CONFLICT (account_id, environment, username) DO NOTHING
                """,
            arguments: [
                created.id.rawValue, environmentID.accountID.rawValue, environmentID.environment.rawValue,
                created.username, created.fullName, created.createdAt.keywayMilliseconds,
            ]
        )
        return db.changesCount == 1 ? .created(created) : .usernameTaken
    }

    /// Whether `username` is the identifier of a user of the environment.
    private static func isUserID(_ username: String, in environmentID: EnvironmentID, db: Database) throws -> Bool {
        guard UserID(validating: username) != nil else { return false }
        return try Bool.fetchOne(
            db,
            sql: "SELECT 1 FROM users WHERE account_id = ? AND environment = ? AND id = ?",
            arguments: [environmentID.accountID.rawValue, environmentID.environment.rawValue, username]
        ) != nil
    }

    public func user(_ reference: String, in environmentID: EnvironmentID) async throws -> User? {
        // The API's hottest read: run here, on a connection of the point reader.
        // No username equals an identifier of its environment, so the order does not matter.
        if UserID(validating: reference) != nil, let user = try await user(.userByID, reference, in: environmentID) {
            return user
        }
        return try await user(.userByUsername, reference, in: environmentID)
    }

    public func user(id: UserID, in environmentID: EnvironmentID) async throws -> User? {
        try await user(.userByID, id.rawValue, in: environmentID)
    }

    private func user(_ query: SQLitePointReader.Query, _ reference: String, in environmentID: EnvironmentID) async throws -> User? {
        do {
            return try pointReader.fetchOne(query) { bindings in
                try bindings.bind(environmentID.accountID.rawValue, at: 1)
                try bindings.bind(environmentID.environment.rawValue, at: 2)
                try bindings.bind(reference, at: 3)
            } decode: { columns in
                User(
                    id: UserID(rawValue: columns.text(0)),
                    username: columns.text(1),
                    fullName: columns.optionalText(2),
                    createdAt: Date(keywayMilliseconds: columns.int64(3))
                )
            }
        } catch let error as DatabaseError where error.resultCode == .SQLITE_BUSY {
            pointReadFallbacks.add(1, ordering: .relaxed)
            return try await database.read { db in
                try Row.fetchOne(
                    db,
                    sql: query.sql,
                    arguments: [environmentID.accountID.rawValue, environmentID.environment.rawValue, reference]
                ).map(User.init(row:))
            }
        }
    }

    public func users(in environmentID: EnvironmentID, after cursor: UserID?, limit: Int) async throws -> UserPage {
        try await database.read { db in
            let rows = try Row.fetchAll(
                db,
                sql: """
                    SELECT id, username, full_name, created_at FROM users
                    WHERE account_id = ? AND environment = ? AND id > ?
                    ORDER BY id LIMIT ?
                    """,
                arguments: [environmentID.accountID.rawValue, environmentID.environment.rawValue, cursor?.rawValue ?? "", limit + 1]
            )
            let users = rows.prefix(limit).map(User.init(row:))
            return UserPage(users: users, nextCursor: rows.count > limit ? users.last?.id : nil)
        }
    }

    public func updateUser(_ id: UserID, in environmentID: EnvironmentID, with changes: UserChanges) async throws -> User? {
        try await database.write { db in
            guard
                var user = try Row.fetchOne(
                    db,
                    sql: "SELECT id, username, full_name, created_at FROM users WHERE id = ? AND account_id = ? AND environment = ?",
                    arguments: [id.rawValue, environmentID.accountID.rawValue, environmentID.environment.rawValue]
                ).map(User.init(row:))
            else { return nil }
            if let username = changes.username, username != user.username {
                if username != id.rawValue, try Self.isUserID(username, in: environmentID, db: db) {
                    throw KeywayError.usernameIsAUserID(username)
                }
                user.username = username
            }
            if let fullName = changes.fullName { user.fullName = fullName }
            do {
                try db.execute(
                    sql: "UPDATE users SET username = ?, full_name = ? WHERE id = ?",
                    arguments: [user.username, user.fullName, id.rawValue]
                )
            } catch let error as DatabaseError where error.extendedResultCode == .SQLITE_CONSTRAINT_UNIQUE {
                throw KeywayError.usernameTaken(user.username)
            }
            return user
        }
    }

    public func deleteUser(_ id: UserID, in environmentID: EnvironmentID) async throws -> Bool {
        try await database.write { db in
            try db.execute(
                sql: "DELETE FROM users WHERE id = ? AND account_id = ? AND environment = ?",
                arguments: [id.rawValue, environmentID.accountID.rawValue, environmentID.environment.rawValue]
            )
            return db.changesCount == 1
        }
    }

    public func users(
        in environmentID: EnvironmentID,
        usernamePrefix prefix: String,
        afterUsername username: String?,
        limit: Int
    )
        async throws -> [User]
    {
        try await database.read { db in
            try Row.fetchAll(
                db,
                sql: """
                    SELECT id, username, full_name, created_at FROM users
                    WHERE account_id = ? AND environment = ? AND username >= ? AND username < ? AND username > ?
                    ORDER BY username LIMIT ?
                    """,
                arguments: [
                    environmentID.accountID.rawValue, environmentID.environment.rawValue, prefix, Self.upperBound(prefix), username ?? "",
                    limit,
                ]
            ).map(User.init(row:))
        }
    }

    public func countUsers(in environmentID: EnvironmentID, usernamePrefix prefix: String) async throws -> Int {
        try await database.read { db in
            try Int.fetchOne(
                db,
                sql: "SELECT COUNT(*) FROM users WHERE account_id = ? AND environment = ? AND username >= ? AND username < ?",
                arguments: [environmentID.accountID.rawValue, environmentID.environment.rawValue, prefix, Self.upperBound(prefix)]
            ) ?? 0
        }
    }

    /// The smallest string greater than every string starting with `prefix`,
    /// so a prefix search is a range on the username index.
    private static func upperBound(_ prefix: String) -> String {
        prefix + "\u{10FFFF}"
    }

    // MARK: Dashboard members and sessions

    public func createAccount(name: String, ownerEmail: String, passwordHash: String, at date: Date) async throws -> (Account, Member) {
        let account = Account(id: .generate(), name: name, createdAt: date.keywayPrecision)
        let owner = Member(id: .generate(), accountID: account.id, email: ownerEmail, role: .owner, createdAt: account.createdAt)
        try await database.write { db in
            guard try Bool.fetchOne(db, sql: "SELECT 1 FROM members WHERE email = ?", arguments: [ownerEmail]) == nil else {
                throw KeywayError.emailTaken()
            }
            try Self.insert(account, db: db)
            try db.execute(
                sql: "INSERT INTO members (id, account_id, email, password_hash, role, created_at) VALUES (?, ?, ?, ?, ?, ?)",
                arguments: [
                    owner.id.rawValue, account.id.rawValue, owner.email, passwordHash, owner.role.rawValue, owner.createdAt.keywayMilliseconds,
                ]
            )
        }
        return (account, owner)
    }

    public func memberCredentials(email: String) async throws -> (member: Member, passwordHash: String)? {
        try await database.read { db in
            try Row.fetchOne(db, sql: "SELECT * FROM members WHERE email = ?", arguments: [email]).map { row in
                (Member(row: row), row["password_hash"] as String)
            }
        }
    }

    public func member(_ id: MemberID) async throws -> Member? {
        try await database.read { db in
            try Row.fetchOne(db, sql: "SELECT * FROM members WHERE id = ?", arguments: [id.rawValue]).map(Member.init(row:))
        }
    }

    public func passwordHash(of id: MemberID) async throws -> String? {
        try await database.read { db in
            try String.fetchOne(db, sql: "SELECT password_hash FROM members WHERE id = ?", arguments: [id.rawValue])
        }
    }

    public func changePassword(of id: MemberID, to passwordHash: String) async throws {
        try await database.write { db in
            try db.execute(sql: "UPDATE members SET password_hash = ? WHERE id = ?", arguments: [passwordHash, id.rawValue])
            try db.execute(sql: "DELETE FROM sessions WHERE member_id = ?", arguments: [id.rawValue])
        }
    }

    public func createSession(_ session: DashboardSession) async throws {
        try await database.write { db in
            try db.execute(
                sql: "INSERT INTO sessions (digest, member_id, csrf_token, created_at, expires_at) VALUES (?, ?, ?, ?, ?)",
                arguments: [
                    Data(session.digest.bytes), session.memberID.rawValue, session.csrfToken, session.createdAt.keywayMilliseconds,
                    session.expiresAt.keywayMilliseconds,
                ]
            )
        }
    }

    public func session(digest: KeyDigest, at date: Date) async throws -> DashboardSession? {
        try await database.read { db in
            try Row.fetchOne(
                db,
                sql: "SELECT * FROM sessions WHERE digest = ? AND expires_at > ?",
                arguments: [Data(digest.bytes), date.keywayMilliseconds]
            ).map { row in
                DashboardSession(
                    digest: try row.digest("digest"),
                    memberID: MemberID(rawValue: row["member_id"]),
                    csrfToken: row["csrf_token"],
                    createdAt: Date(keywayMilliseconds: row["created_at"]),
                    expiresAt: Date(keywayMilliseconds: row["expires_at"])
                )
            }
        }
    }

    public func deleteSession(digest: KeyDigest) async throws {
        try await database.write { db in
            try db.execute(sql: "DELETE FROM sessions WHERE digest = ?", arguments: [Data(digest.bytes)])
        }
    }

    public func deleteExpiredSessions(before date: Date) async throws {
        try await database.write { db in
            try db.execute(sql: "DELETE FROM sessions WHERE expires_at <= ?", arguments: [date.keywayMilliseconds])
        }
    }

    // MARK: User-token signing keys and CORS

    public func signingKeys(for environmentID: EnvironmentID) async throws -> [SigningKeyRecord] {
        try await database.read { db in
            try Row.fetchAll(
                db,
                sql: "SELECT * FROM signing_keys WHERE account_id = ? AND environment = ? ORDER BY created_at DESC, id DESC",
                arguments: [environmentID.accountID.rawValue, environmentID.environment.rawValue]
            ).map(SigningKeyRecord.init(row:))
        }
    }

    public func signingKey(id: String) async throws -> SigningKeyRecord? {
        try await database.read { db in
            try Row.fetchOne(db, sql: "SELECT * FROM signing_keys WHERE id = ?", arguments: [id]).map(SigningKeyRecord.init(row:))
        }
    }

    public func hasSigningKeys() async throws -> Bool {
        try await database.read { db in try Bool.fetchOne(db, sql: "SELECT EXISTS (SELECT 1 FROM signing_keys)") ?? false }
    }

    public func insertSigningKey(_ key: SigningKeyRecord, retiringActive: Bool) async throws -> SigningKeyRecord {
        try await database.write { db in
            let scope: StatementArguments = [key.environmentID.accountID.rawValue, key.environmentID.environment.rawValue]
            if retiringActive {
                try db.execute(
                    sql: "UPDATE signing_keys SET retired_at = ? WHERE account_id = ? AND environment = ? AND retired_at IS NULL",
                    arguments: [key.createdAt.keywayMilliseconds] + scope
                )
            } else if let active = try Row.fetchOne(
                db,
                sql: "SELECT * FROM signing_keys WHERE account_id = ? AND environment = ? AND retired_at IS NULL",
                arguments: scope
            ) {
                return try SigningKeyRecord(row: active)
            }
            try db.execute(
                sql: """
                    INSERT INTO signing_keys (id, account_id, environment, public_key, sealed_private_key, created_at)
                    VALUES (?, ?, ?, ?, ?, ?)
                    """,
                arguments: [key.id] + scope + [key.publicKey, key.sealedPrivateKey, key.createdAt.keywayMilliseconds]
            )
            return key
        }
    }

    public func allowedOrigins(for environmentID: EnvironmentID) async throws -> [String] {
        try await database.read { db in
            try String.fetchAll(
                db,
                sql: "SELECT origin FROM environment_origins WHERE account_id = ? AND environment = ? ORDER BY position",
                arguments: [environmentID.accountID.rawValue, environmentID.environment.rawValue]
            )
        }
    }

    public func setAllowedOrigins(_ origins: [String], for environmentID: EnvironmentID) async throws {
        let scope: StatementArguments = [environmentID.accountID.rawValue, environmentID.environment.rawValue]
        try await database.write { db in
            guard try Bool.fetchOne(db, sql: "SELECT 1 FROM environments WHERE account_id = ? AND name = ?", arguments: scope) != nil
            else { throw KeywayError.accountNotFound(environmentID.accountID) }
            try db.execute(sql: "DELETE FROM environment_origins WHERE account_id = ? AND environment = ?", arguments: scope)
            for (position, origin) in origins.enumerated() {
                try db.execute(
                    sql: "INSERT OR IGNORE INTO environment_origins (account_id, environment, position, origin) VALUES (?, ?, ?, ?)",
                    arguments: scope + [position, origin]
                )
            }
        }
    }

    public func isOriginAllowedAnywhere(_ origin: String) async throws -> Bool {
        guard !origin.isEmpty else { return false }
        // One probe of `environment_origins_by_origin`, however many environments there are.
        return try await database.read { db in
            try Bool.fetchOne(db, sql: "SELECT 1 FROM environment_origins WHERE origin = ? LIMIT 1", arguments: [origin]) != nil
        }
    }

    // MARK: Operations

    public func requireCurrentSchema() async throws {
        try KeywaySQLiteSchema.requireCurrent(database)
    }

    public func checkHealth() async throws {
        _ = try await database.read { db in try Int.fetchOne(db, sql: "SELECT 1") }
    }
}

extension Row {
    fileprivate func digest(_ column: String) throws -> KeyDigest {
        let data: Data = self[column]
        guard let digest = KeyDigest(bytes: data) else {
            throw DatabaseError(resultCode: .SQLITE_CORRUPT, message: "secret_keys.\(column) is not a 32-byte digest")
        }
        return digest
    }
}

extension Account {
    fileprivate init(row: Row) {
        self.init(id: AccountID(rawValue: row["id"]), name: row["name"], createdAt: Date(keywayMilliseconds: row["created_at"]))
    }
}

extension SigningKeyRecord {
    fileprivate init(row: Row) throws {
        self.init(
            id: row["id"],
            environmentID: EnvironmentID(
                accountID: AccountID(rawValue: row["account_id"]),
                environment: Environment(rawValue: row["environment"]) ?? .development
            ),
            publicKey: row["public_key"],
            sealedPrivateKey: row["sealed_private_key"],
            createdAt: Date(keywayMilliseconds: row["created_at"]),
            retiredAt: (row["retired_at"] as Int64?).map(Date.init(keywayMilliseconds:))
        )
    }
}

extension Member {
    fileprivate init(row: Row) {
        self.init(
            id: MemberID(rawValue: row["id"]),
            accountID: AccountID(rawValue: row["account_id"]),
            email: row["email"],
            role: MemberRole(rawValue: row["role"]) ?? .owner,
            createdAt: Date(keywayMilliseconds: row["created_at"])
        )
    }
}

extension User {
    fileprivate init(row: Row) {
        self.init(
            id: UserID(rawValue: row["id"]),
            username: row["username"],
            fullName: row["full_name"],
            createdAt: Date(keywayMilliseconds: row["created_at"])
        )
    }
}

extension SecretKeyRecord {
    fileprivate init(row: Row) throws {
        self.init(
            id: SecretKeyID(rawValue: row["id"]),
            environmentID: EnvironmentID(
                accountID: AccountID(rawValue: row["account_id"]),
                environment: Environment(rawValue: row["environment"]) ?? .development
            ),
            digest: try row.digest("digest"),
            hint: row["hint"],
            createdAt: Date(keywayMilliseconds: row["created_at"]),
            createdBy: row["created_by"],
            revokedAt: (row["revoked_at"] as Int64?).map(Date.init(keywayMilliseconds:)),
            revocationReason: (row["revocation_reason"] as String?).flatMap(RevocationReason.init(rawValue:)),
            lastUsedAt: (row["last_used_at"] as Int64?).map(Date.init(keywayMilliseconds:))
        )
    }
}

extension SecretKeyRecord {
    /// Decodes a row of ``SQLitePointReader/Query/secretKeyByDigest``.
    fileprivate init(columns: SQLitePointReader.Columns) throws {
        guard let digest = KeyDigest(bytes: columns.blob(3)) else {
            throw DatabaseError(resultCode: .SQLITE_CORRUPT, message: "secret_keys.digest is not a 32-byte digest")
        }
        self.init(
            id: SecretKeyID(rawValue: columns.text(0)),
            environmentID: EnvironmentID(
                accountID: AccountID(rawValue: columns.text(1)),
                environment: Environment(rawValue: columns.text(2)) ?? .development
            ),
            digest: digest,
            hint: columns.text(4),
            createdAt: Date(keywayMilliseconds: columns.int64(5)),
            createdBy: columns.text(6),
            revokedAt: columns.optionalInt64(7).map(Date.init(keywayMilliseconds:)),
            revocationReason: columns.optionalText(8).flatMap(RevocationReason.init(rawValue:)),
            lastUsedAt: columns.optionalInt64(9).map(Date.init(keywayMilliseconds:))
        )
    }
}

// MARK: Revocations by other processes

extension KeywaySQLiteStore: RevocationNotifying {
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
