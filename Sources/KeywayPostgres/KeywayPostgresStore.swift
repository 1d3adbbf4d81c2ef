public import Foundation
public import KeywayCore
public import Logging
import NIOSSL
public import PostgresNIO
public import ServiceLifecycle

/// ``KeywayStore`` on PostgreSQL, for many instances behind a load balancer.
///
/// Constraints live in the database (one active key and one active signing key
/// per environment, unique usernames), so racing instances cannot break them.
/// Key generations are serialised per environment by an advisory lock; the
/// revocation sequence is drawn under one more, taken last and held only to the
/// commit, which keeps it in commit order. Generations announce themselves with
/// `NOTIFY keyway_revocations` so other instances learn at once.
///
/// Run it as a service (``run()``) for as long as it is used.
public final class KeywayPostgresStore: KeywayStore, RevocationNotifying, Service {
    static let revocationChannel = "keyway_revocations"
    /// Held from drawing a revocation number to the commit. The value of the former
    /// global generation lock, so a generation by an older instance waits for it too.
    static let revocationSequenceLock: Int64 = 0x6B65_7977_6179_0002
    /// The first key of the two-key advisory locks, one per environment, that serialise
    /// generations (two-key locks never collide with the one-key locks above).
    static let generationLockSpace: Int32 = 0x6B77_0003

    /// Takes the environment's generation lock until the transaction ends. Environments
    /// whose names hash alike share a lock, which only makes them wait for each other.
    static func generationLock(for environmentID: EnvironmentID) -> PostgresQuery {
        let name = "\(environmentID.accountID.rawValue)/\(environmentID.environment.rawValue)"
        return "SELECT pg_advisory_xact_lock(\(generationLockSpace), hashtext(\(name)))"
    }

    let client: PostgresClient
    private let configuration: PostgresClient.Configuration
    /// TLS and connect timeout of connections outside the pool (the LISTEN one), the same as the pool's.
    private let connectionTLS: PostgresConnection.Configuration.TLS
    private let connectTimeout: TimeAmount
    /// How connections use TLS (the URL's `sslmode`).
    public let sslMode: PostgresConnectionSettings.SSLMode
    let logger: Logger
    /// Lookups of keys no cache knows, many per query.
    private let keyLookups: BatchedLookup<KeyDigest, SecretKeyRecord>
    private let makeUserID: @Sendable (Date) -> UserID

    /// - Parameters:
    ///   - settings: Where and how to connect, from ``PostgresConnectionSettings``.
    ///   - poolSize: Most connections this instance opens.
    ///   - connectTimeout: How long to wait for a new connection.
    ///   - lookupTimeout: How long a lookup of a key no cache knows may wait for the database
    ///     before it fails with `service_unavailable`.
    /// - Throws: when the TLS context cannot be built.
    public convenience init(
        settings: PostgresConnectionSettings,
        poolSize: Int = 10,
        connectTimeout: Duration = .seconds(5),
        lookupTimeout: Duration = .seconds(5),
        logger: Logger
    ) throws {
        try self.init(
            settings: settings,
            poolSize: poolSize,
            connectTimeout: connectTimeout,
            lookupTimeout: lookupTimeout,
            logger: logger,
            makeUserID: UserID.generate(at:)
        )
    }

    /// - Parameter makeUserID: Draws new users' identifiers; tests pass one that collides on purpose.
    init(
        settings: PostgresConnectionSettings,
        poolSize: Int,
        connectTimeout: Duration,
        lookupTimeout: Duration = .seconds(5),
        logger: Logger,
        makeUserID: @escaping @Sendable (Date) -> UserID
    ) throws {
        self.makeUserID = makeUserID
        var configuration = PostgresClient.Configuration(
            host: settings.host,
            port: settings.port,
            username: settings.username,
            password: settings.password,
            database: settings.database,
            tls: settings.clientTLS
        )
        configuration.options.maximumConnections = poolSize
        configuration.options.connectTimeout = connectTimeout
        configuration.options.additionalStartupParameters = [("application_name", "keyway")]
        self.configuration = configuration
        self.connectionTLS = try settings.connectionTLS()
        self.connectTimeout = .milliseconds(Int64(connectTimeout / .milliseconds(1)))
        self.sslMode = settings.sslMode
        let client = PostgresClient(configuration: configuration, backgroundLogger: logger)
        self.client = client
        self.logger = logger
        self.keyLookups = BatchedLookup(maximumBatch: 500, timeout: lookupTimeout) { digests in
            try await Self.secretKeys(digests: digests, client: client, logger: logger)
        }
    }

    /// - Parameters:
    ///   - url: `postgres://user:password@host:port/database`, with an optional `sslmode` and `sslrootcert`.
    ///   - caFile: The CA of the server's certificate (`KEYWAY_DATABASE_CA_FILE`).
    ///   - poolSize: Most connections this instance opens.
    ///   - connectTimeout: How long to wait for a new connection.
    /// - Throws: ``ConfigurationProblem`` when the URL or the CA file cannot be used.
    public convenience init(
        url: String,
        caFile: String? = nil,
        poolSize: Int = 10,
        connectTimeout: Duration = .seconds(5),
        logger: Logger
    ) throws {
        try self.init(
            settings: try PostgresConnectionSettings(url: url, caFile: caFile),
            poolSize: poolSize,
            connectTimeout: connectTimeout,
            logger: logger
        )
    }

    /// Runs the connection pool until cancelled.
    public func run() async {
        await client.run()
    }

    /// Applies pending migrations. Safe to run from several processes at once.
    public func migrate() async throws -> [String] {
        try await KeywayPostgresSchema.migrate(client, logger: logger)
    }

    /// Throws ``SchemaError`` when the schema needs `keyway migrate`.
    public func requireCurrentSchema() async throws {
        try await KeywayPostgresSchema.requireCurrent(client, logger: logger)
    }

    // MARK: Accounts

    public func createAccount(name: String, at date: Date) async throws -> Account {
        let account = Account(id: .generate(), name: name, createdAt: date.keywayPrecision)
        try await transaction { connection in
            try await Self.insert(account, on: connection, logger: logger)
        }
        return account
    }

    private static func insert(_ account: Account, on connection: PostgresConnection, logger: Logger) async throws {
        let created = account.createdAt.keywayMilliseconds
        try await connection.query(
            "INSERT INTO accounts (id, name, created_at) VALUES (\(account.id.rawValue), \(account.name), \(created))",
            logger: logger
        )
        for environment in Environment.allCases {
            try await connection.query(
                "INSERT INTO environments (account_id, name, created_at) VALUES (\(account.id.rawValue), \(environment.rawValue), \(created))",
                logger: logger
            )
        }
    }

    public func account(_ id: AccountID) async throws -> Account? {
        try await first(
            "SELECT id, name, created_at FROM accounts WHERE id = \(id.rawValue)",
            as: (String, String, Int64).self
        ).map(Account.init(row:))
    }

    public func accounts() async throws -> [Account] {
        try await all("SELECT id, name, created_at FROM accounts ORDER BY created_at, id", as: (String, String, Int64).self)
            .map(Account.init(row:))
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
        let account = environmentID.accountID.rawValue
        let environment = environmentID.environment.rawValue
        return try await transaction { connection in
            // One generation at a time per environment, across all instances, so the checks below
            // and the update cannot interleave with another generation of the environment; other
            // environments' generations do not wait. Each statement must see what was committed
            // before a lock was granted, which READ COMMITTED gives whatever the database's default
            // isolation is (under REPEATABLE READ the snapshot would predate the lock).
            try await connection.query("SET TRANSACTION ISOLATION LEVEL READ COMMITTED", logger: logger)
            try await connection.query(Self.generationLock(for: environmentID), logger: logger)
            let exists = try await connection.query("SELECT 1 FROM accounts WHERE id = \(account)", logger: logger).decode(Int32.self)
            var found = false
            for try await _ in exists { found = true }
            guard found else { throw KeywayError.accountNotFound(environmentID.accountID) }
            if let limit {
                // Under the environment's lock: racing generations cannot all pass.
                let rows = try await connection.query(
                    """
                    SELECT created_at FROM secret_keys WHERE account_id = \(account) AND environment = \(environment)
                    ORDER BY created_at DESC LIMIT \(limit.count)
                    """,
                    logger: logger
                ).decode(Int64.self)
                var newest: [Date] = []
                for try await created in rows { newest.append(Date(keywayMilliseconds: created)) }
                if let retryAfter = limit.retryAfter(newestGenerations: newest, at: record.createdAt) {
                    throw KeywayError.tooManyKeyGenerations(limit: limit, retryAfter: retryAfter)
                }
            }
            if case .only(let expected) = replacement {
                // Under the environment's generation lock, so no other generation can come between this and the update.
                let active = try await connection.query(
                    "SELECT id FROM secret_keys WHERE account_id = \(account) AND environment = \(environment) AND revoked_at IS NULL",
                    logger: logger
                ).decode(String.self)
                var activeIDs: [SecretKeyID] = []
                for try await id in active { activeIDs.append(SecretKeyID(rawValue: id)) }
                guard activeIDs == (expected.map { [$0] } ?? []) else { throw KeywayError.activeKeyChanged }
            }

            // Revocation numbers must commit in the order they are drawn, so a follower reading
            // "after n" can never skip one: they are drawn under one lock for all environments,
            // taken last and held only for the update, the insert and the commit.
            try await connection.query("SELECT pg_advisory_xact_lock(\(Self.revocationSequenceLock))", logger: logger)
            var revoked: [KeyRevocation] = []
            let previous = try await connection.query(
                """
                UPDATE secret_keys SET revoked_at = \(record.createdAt.keywayMilliseconds), revocation_reason = 'regenerated',
                    revocation_sequence = (SELECT COALESCE(MAX(revocation_sequence), 0) + 1 FROM secret_keys)
                WHERE account_id = \(account) AND environment = \(environment) AND revoked_at IS NULL
                RETURNING digest, revocation_sequence
                """,
                logger: logger
            ).decode((Data, Int64).self)
            for try await (digest, sequence) in previous {
                revoked.append(KeyRevocation(sequence: sequence, digest: try Self.digest(digest), revokedAt: record.createdAt, reason: .regenerated))
            }
            try await connection.query(
                """
                INSERT INTO secret_keys (id, account_id, environment, digest, hint, created_at, created_by)
                VALUES (\(record.id.rawValue), \(account), \(environment), \(Data(key.digest.bytes)), \(record.hint),
                        \(record.createdAt.keywayMilliseconds), \(createdBy))
                """,
                logger: logger
            )
            if let last = revoked.last {
                try await connection.query("SELECT pg_notify(\(Self.revocationChannel), \(String(last.sequence)))", logger: logger)
            }
            return KeyGeneration(key: record, revoked: revoked)
        }
    }

    fileprivate static let keyColumns =
        "id, account_id, environment, digest, hint, created_at, created_by, revoked_at, revocation_reason, last_used_at"
    fileprivate typealias KeyRow = (String, String, String, Data, String, Int64, String, Int64?, String?, Int64?)

    public func secretKey(digest: KeyDigest) async throws -> SecretKeyRecord? {
        // Reached only by keys the caller's cache does not know; concurrent ones share a query.
        try await keyLookups.value(for: digest)
    }

    private static func secretKeys(digests: [KeyDigest], client: PostgresClient, logger: Logger) async throws -> [KeyDigest: SecretKeyRecord] {
        var records: [KeyDigest: SecretKeyRecord] = [:]
        for try await record in try await client.execute(KeysByDigest(digests: digests), logger: logger) {
            records[record.digest] = record
        }
        return records
    }

    public func secretKeys(for accountID: AccountID) async throws -> [SecretKeyRecord] {
        try await all(
            "SELECT \(unescaped: Self.keyColumns) FROM secret_keys WHERE account_id = \(accountID.rawValue) ORDER BY created_at DESC, id DESC",
            as: KeyRow.self
        ).map(Self.record)
    }

    fileprivate static func record(_ row: KeyRow) throws -> SecretKeyRecord {
        SecretKeyRecord(
            id: SecretKeyID(rawValue: row.0),
            environmentID: EnvironmentID(accountID: AccountID(rawValue: row.1), environment: Environment(rawValue: row.2) ?? .development),
            digest: try digest(row.3),
            hint: row.4,
            createdAt: Date(keywayMilliseconds: row.5),
            createdBy: row.6,
            revokedAt: row.7.map(Date.init(keywayMilliseconds:)),
            revocationReason: row.8.flatMap(RevocationReason.init(rawValue:)),
            lastUsedAt: row.9.map(Date.init(keywayMilliseconds:))
        )
    }

    public func revocations(after sequence: Int64, limit: Int) async throws -> [KeyRevocation] {
        try await all(
            """
            SELECT revocation_sequence, digest, revoked_at, revocation_reason FROM secret_keys
            WHERE revocation_sequence > \(sequence) ORDER BY revocation_sequence LIMIT \(limit)
            """,
            as: (Int64, Data, Int64, String).self
        ).map { row in
            KeyRevocation(
                sequence: row.0,
                digest: try Self.digest(row.1),
                revokedAt: Date(keywayMilliseconds: row.2),
                reason: RevocationReason(rawValue: row.3) ?? .regenerated
            )
        }
    }

    public func latestRevocationSequence() async throws -> Int64 {
        try await first("SELECT COALESCE(MAX(revocation_sequence), 0)::BIGINT FROM secret_keys", as: Int64.self) ?? 0
    }

    public func recordKeyUsage(_ lastUsed: [SecretKeyID: Date]) async throws {
        guard !lastUsed.isEmpty else { return }
        try await transaction { connection in
            for (id, date) in lastUsed {
                try await connection.query(
                    "UPDATE secret_keys SET last_used_at = GREATEST(COALESCE(last_used_at, 0), \(date.keywayMilliseconds)) WHERE id = \(id.rawValue)",
                    logger: logger
                )
            }
        }
    }

    // MARK: Users

    private typealias UserRow = (String, String, String?, Int64)

    public func createUser(_ user: NewUser, in environmentID: EnvironmentID, at date: Date) async throws -> User {
        let insertion = try await client.withConnection { connection in
            try await Self.insert(user, in: environmentID, at: date, makeUserID: makeUserID, on: connection, logger: logger)
        }
        return try insertion.created(username: user.username)
    }

    public func createUsers(_ users: [NewUser], in environmentID: EnvironmentID, at date: Date) async throws -> BatchCreation {
        try await transaction { connection in
            var result = BatchCreation()
            for user in users {
                let insertion = try await Self.insert(user, in: environmentID, at: date, makeUserID: makeUserID, on: connection, logger: logger)
                result.record(insertion, username: user.username)
            }
            return result
        }
    }

    /// Inserts a user unless its username is taken or is a user's identifier, and never with
    /// an identifier that is a username: one statement when nothing is in the way.
    ///
    /// The checks and the insert are one statement but not one lock. That suffices: to
    /// collide with a row another transaction is inserting, a username would have to
    /// guess that row's new, random identifier (64 random bits) before it is returned.
    private static func insert(
        _ user: NewUser,
        in environmentID: EnvironmentID,
        at date: Date,
        makeUserID: (Date) -> UserID,
        on connection: PostgresConnection,
        logger: Logger
    ) async throws -> UserInsertion {
        let account = environmentID.accountID.rawValue
        let environment = environmentID.environment.rawValue
        while true {
            let created = User(id: makeUserID(date), username: user.username, fullName: user.fullName, createdAt: date.keywayPrecision)
            let rows = try await connection.query(
                """
                INSERT INTO users (id, account_id, environment, username, full_name, created_at)
                SELECT \(created.id.rawValue), \(account), \(environment), \(created.username), \(created.fullName),
                       \(created.createdAt.keywayMilliseconds)
                WHERE NOT EXISTS (
                    SELECT 1 FROM users WHERE account_id = \(account) AND environment = \(environment)
                      AND (id = \(created.username) OR username = \(created.id.rawValue))
                )
                ON CONFLICT (account_id, environment, username) DO NOTHING
                RETURNING id
                """,
                logger: logger
            ).decode(String.self)
            var inserted = false
            for try await _ in rows { inserted = true }
            if inserted { return .created(created) }
            // Say why; an identifier that happened to equal a username is drawn again.
            let reasons = try await connection.query(
                """
                SELECT id = \(created.username), username = \(created.username) FROM users
                WHERE account_id = \(account) AND environment = \(environment) AND (id = \(created.username) OR username = \(created.username))
                """,
                logger: logger
            ).decode((Bool, Bool).self)
            var isAUserID = false
            var taken = false
            for try await (idMatches, usernameMatches) in reasons {
                isAUserID = isAUserID || idMatches
                taken = taken || usernameMatches
            }
            if isAUserID { return .usernameIsAUserID }
            if taken { return .usernameTaken }
        }
    }

    public func user(_ reference: String, in environmentID: EnvironmentID) async throws -> User? {
        // PostgreSQL text cannot hold NUL (it refuses the query), so no user can match one.
        guard !reference.utf8.contains(0) else { return nil }
        // No username equals an identifier of its environment, so the order does not matter.
        if UserID(validating: reference) != nil, let user = try await first(UserLookup<ByID>(environmentID: environmentID, value: reference)) {
            return user
        }
        return try await first(UserLookup<ByUsername>(environmentID: environmentID, value: reference))
    }

    public func user(id: UserID, in environmentID: EnvironmentID) async throws -> User? {
        try await first(UserLookup<ByID>(environmentID: environmentID, value: id.rawValue))
    }

    public func users(in environmentID: EnvironmentID, after cursor: UserID?, limit: Int) async throws -> UserPage {
        let rows = try await all(
            """
            SELECT id, username, full_name, created_at FROM users
            WHERE account_id = \(environmentID.accountID.rawValue) AND environment = \(environmentID.environment.rawValue)
              AND id > \(cursor?.rawValue ?? "")
            ORDER BY id LIMIT \(limit + 1)
            """,
            as: UserRow.self
        )
        let users = rows.prefix(limit).map(User.init(row:))
        return UserPage(users: users, nextCursor: rows.count > limit ? users.last?.id : nil)
    }

    public func updateUser(_ id: UserID, in environmentID: EnvironmentID, with changes: UserChanges) async throws -> User? {
        try await transaction { connection in
            let rows = try await connection.query(
                """
                SELECT id, username, full_name, created_at FROM users
                WHERE id = \(id.rawValue) AND account_id = \(environmentID.accountID.rawValue)
                  AND environment = \(environmentID.environment.rawValue)
                FOR UPDATE
                """,
                logger: logger
            ).decode(UserRow.self)
            var found: User?
            for try await row in rows { found = User(row: row) }
            guard var user = found else { return nil }
            if let username = changes.username, username != user.username {
                if UserID(validating: username) != nil, username != id.rawValue {
                    let other = try await connection.query(
                        """
                        SELECT 1 FROM users WHERE account_id = \(environmentID.accountID.rawValue)
                          AND environment = \(environmentID.environment.rawValue) AND id = \(username)
                        """,
                        logger: logger
                    ).decode(Int32.self)
                    for try await _ in other { throw KeywayError.usernameIsAUserID(username) }
                }
                user.username = username
            }
            if let fullName = changes.fullName { user.fullName = fullName }
            do {
                try await connection.query(
                    "UPDATE users SET username = \(user.username), full_name = \(user.fullName) WHERE id = \(id.rawValue)",
                    logger: logger
                )
            } catch let error as PSQLError where error.serverInfo?[.sqlState] == "23505" {
                throw KeywayError.usernameTaken(user.username)
            }
            return user
        }
    }

    public func deleteUser(_ id: UserID, in environmentID: EnvironmentID) async throws -> Bool {
        try await first(
            """
            DELETE FROM users WHERE id = \(id.rawValue) AND account_id = \(environmentID.accountID.rawValue)
              AND environment = \(environmentID.environment.rawValue)
            RETURNING id
            """,
            as: String.self
        ) != nil
    }

    public func users(
        in environmentID: EnvironmentID,
        usernamePrefix prefix: String,
        afterUsername username: String?,
        limit: Int
    )
        async throws -> [User]
    {
        try await all(
            """
            SELECT id, username, full_name, created_at FROM users
            WHERE account_id = \(environmentID.accountID.rawValue) AND environment = \(environmentID.environment.rawValue)
              AND username >= \(prefix) AND username < \(prefix + "\u{10FFFF}") AND username > \(username ?? "")
            ORDER BY username LIMIT \(limit)
            """,
            as: UserRow.self
        ).map(User.init(row:))
    }

    public func countUsers(in environmentID: EnvironmentID, usernamePrefix prefix: String) async throws -> Int {
        Int(
            try await first(
                """
                SELECT COUNT(*) FROM users
                WHERE account_id = \(environmentID.accountID.rawValue) AND environment = \(environmentID.environment.rawValue)
                  AND username >= \(prefix) AND username < \(prefix + "\u{10FFFF}")
                """,
                as: Int64.self
            ) ?? 0
        )
    }

    // MARK: Dashboard members and sessions

    private typealias MemberRow = (String, String, String, String, Int64)

    public func createAccount(name: String, ownerEmail: String, passwordHash: String, at date: Date) async throws -> (Account, Member) {
        let account = Account(id: .generate(), name: name, createdAt: date.keywayPrecision)
        let owner = Member(id: .generate(), accountID: account.id, email: ownerEmail, role: .owner, createdAt: account.createdAt)
        do {
            try await transaction { connection in
                try await Self.insert(account, on: connection, logger: logger)
                try await connection.query(
                    """
                    INSERT INTO members (id, account_id, email, password_hash, role, created_at)
                    VALUES (\(owner.id.rawValue), \(account.id.rawValue), \(owner.email), \(passwordHash), \(owner.role.rawValue),
                            \(owner.createdAt.keywayMilliseconds))
                    """,
                    logger: logger
                )
            }
        } catch let error as PSQLError where error.serverInfo?[.sqlState] == "23505" {
            throw KeywayError.emailTaken()
        }
        return (account, owner)
    }

    public func memberCredentials(email: String) async throws -> (member: Member, passwordHash: String)? {
        try await first(
            "SELECT id, account_id, email, role, created_at, password_hash FROM members WHERE email = \(email)",
            as: (String, String, String, String, Int64, String).self
        ).map { row in (Member(row: (row.0, row.1, row.2, row.3, row.4)), row.5) }
    }

    public func member(_ id: MemberID) async throws -> Member? {
        try await first("SELECT id, account_id, email, role, created_at FROM members WHERE id = \(id.rawValue)", as: MemberRow.self)
            .map(Member.init(row:))
    }

    public func passwordHash(of id: MemberID) async throws -> String? {
        try await first("SELECT password_hash FROM members WHERE id = \(id.rawValue)", as: String.self)
    }

    public func changePassword(of id: MemberID, to passwordHash: String) async throws {
        try await transaction { connection in
            try await connection.query("UPDATE members SET password_hash = \(passwordHash) WHERE id = \(id.rawValue)", logger: logger)
            try await connection.query("DELETE FROM sessions WHERE member_id = \(id.rawValue)", logger: logger)
        }
    }

    public func createSession(_ session: DashboardSession) async throws {
        try await client.query(
            """
            INSERT INTO sessions (digest, member_id, csrf_token, created_at, expires_at)
            VALUES (\(Data(session.digest.bytes)), \(session.memberID.rawValue), \(session.csrfToken), \(session.createdAt.keywayMilliseconds),
                    \(session.expiresAt.keywayMilliseconds))
            """,
            logger: logger
        )
    }

    public func session(digest: KeyDigest, at date: Date) async throws -> DashboardSession? {
        try await first(
            """
            SELECT digest, member_id, csrf_token, created_at, expires_at FROM sessions
            WHERE digest = \(Data(digest.bytes)) AND expires_at > \(date.keywayMilliseconds)
            """,
            as: (Data, String, String, Int64, Int64).self
        ).map { row in
            DashboardSession(
                digest: try Self.digest(row.0),
                memberID: MemberID(rawValue: row.1),
                csrfToken: row.2,
                createdAt: Date(keywayMilliseconds: row.3),
                expiresAt: Date(keywayMilliseconds: row.4)
            )
        }
    }

    public func deleteSession(digest: KeyDigest) async throws {
        try await client.query("DELETE FROM sessions WHERE digest = \(Data(digest.bytes))", logger: logger)
    }

    public func deleteExpiredSessions(before date: Date) async throws {
        try await client.query("DELETE FROM sessions WHERE expires_at <= \(date.keywayMilliseconds)", logger: logger)
    }

    // MARK: User-token signing keys and CORS

    private typealias SigningRow = (String, String, String, Data, Data, Int64, Int64?)
    private static let signingColumns = "id, account_id, environment, public_key, sealed_private_key, created_at, retired_at"

    public func signingKeys(for environmentID: EnvironmentID) async throws -> [SigningKeyRecord] {
        try await all(
            """
            SELECT \(unescaped: Self.signingColumns) FROM signing_keys
            WHERE account_id = \(environmentID.accountID.rawValue) AND environment = \(environmentID.environment.rawValue)
            ORDER BY created_at DESC, id DESC
            """,
            as: SigningRow.self
        ).map(Self.signingKey)
    }

    public func signingKey(id: String) async throws -> SigningKeyRecord? {
        try await first("SELECT \(unescaped: Self.signingColumns) FROM signing_keys WHERE id = \(id)", as: SigningRow.self).map(Self.signingKey)
    }

    public func hasSigningKeys() async throws -> Bool {
        try await first("SELECT EXISTS (SELECT 1 FROM signing_keys)", as: Bool.self) ?? false
    }

    public func insertSigningKey(_ key: SigningKeyRecord, retiringActive: Bool) async throws -> SigningKeyRecord {
        let account = key.environmentID.accountID.rawValue
        let environment = key.environmentID.environment.rawValue
        return try await transaction { connection in
            if retiringActive {
                try await connection.query(
                    """
                    UPDATE signing_keys SET retired_at = \(key.createdAt.keywayMilliseconds)
                    WHERE account_id = \(account) AND environment = \(environment) AND retired_at IS NULL
                    """,
                    logger: logger
                )
            }
            let inserted = try await connection.query(
                """
                INSERT INTO signing_keys (id, account_id, environment, public_key, sealed_private_key, created_at)
                VALUES (\(key.id), \(account), \(environment), \(key.publicKey), \(key.sealedPrivateKey), \(key.createdAt.keywayMilliseconds))
                ON CONFLICT (account_id, environment) WHERE retired_at IS NULL DO NOTHING
                RETURNING id
                """,
                logger: logger
            ).decode(String.self)
            var didInsert = false
            for try await _ in inserted { didInsert = true }
            if didInsert { return key }
            // Another instance created the first key at the same moment: use theirs.
            let rows = try await connection.query(
                """
                SELECT \(unescaped: Self.signingColumns) FROM signing_keys
                WHERE account_id = \(account) AND environment = \(environment) AND retired_at IS NULL
                """,
                logger: logger
            ).decode(SigningRow.self)
            for try await row in rows { return try Self.signingKey(row) }
            throw SchemaError("no active signing key after a conflicting insert")
        }
    }

    private static func signingKey(_ row: SigningRow) throws -> SigningKeyRecord {
        SigningKeyRecord(
            id: row.0,
            environmentID: EnvironmentID(accountID: AccountID(rawValue: row.1), environment: Environment(rawValue: row.2) ?? .development),
            publicKey: row.3,
            sealedPrivateKey: row.4,
            createdAt: Date(keywayMilliseconds: row.5),
            retiredAt: row.6.map(Date.init(keywayMilliseconds:))
        )
    }

    public func allowedOrigins(for environmentID: EnvironmentID) async throws -> [String] {
        try await all(
            """
            SELECT origin FROM environment_origins
            WHERE account_id = \(environmentID.accountID.rawValue) AND environment = \(environmentID.environment.rawValue)
            ORDER BY position
            """,
            as: String.self
        )
    }

    public func setAllowedOrigins(_ origins: [String], for environmentID: EnvironmentID) async throws {
        let account = environmentID.accountID.rawValue
        let environment = environmentID.environment.rawValue
        try await transaction { connection in
            // The list a concurrent setting committed is replaced, not a serialization failure
            // (40001) as under a REPEATABLE READ default: READ COMMITTED, as for key generations.
            try await connection.query("SET TRANSACTION ISOLATION LEVEL READ COMMITTED", logger: logger)
            let exists = try await connection.query(
                "SELECT 1 FROM environments WHERE account_id = \(account) AND name = \(environment) FOR UPDATE",
                logger: logger
            ).decode(Int32.self)
            var found = false
            for try await _ in exists { found = true }
            guard found else { throw KeywayError.accountNotFound(environmentID.accountID) }
            try await connection.query(
                "DELETE FROM environment_origins WHERE account_id = \(account) AND environment = \(environment)",
                logger: logger
            )
            for (position, origin) in origins.enumerated() {
                try await connection.query(
                    """
                    INSERT INTO environment_origins (account_id, environment, position, origin)
                    VALUES (\(account), \(environment), \(position), \(origin)) ON CONFLICT DO NOTHING
                    """,
                    logger: logger
                )
            }
        }
    }

    public func isOriginAllowedAnywhere(_ origin: String) async throws -> Bool {
        guard !origin.isEmpty else { return false }
        // One probe of `environment_origins_by_origin`, however many environments there are.
        return try await first(OriginAllowed(origin: origin)) != nil
    }

    // MARK: Operations

    /// Runs one administrative statement (for tests and tooling), unescaped.
    public func execute(_ sql: String) async throws {
        try await client.query(PostgresQuery(unsafeSQL: sql), logger: logger)
    }

    public func checkHealth() async throws {
        _ = try await first("SELECT 1", as: Int32.self)
    }

    // MARK: Revocation notifications

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

    /// The settings of a connection outside the pool, with the pool's address, credentials and TLS.
    private func singleConnection(applicationName: String) -> PostgresConnection.Configuration {
        var connection = PostgresConnection.Configuration(
            host: configuration.host ?? "localhost",
            port: configuration.port ?? 5432,
            username: configuration.username,
            password: configuration.password,
            database: configuration.database,
            tls: connectionTLS
        )
        connection.options.additionalStartupParameters = [("application_name", applicationName)]
        connection.options.connectTimeout = connectTimeout
        return connection
    }

    /// Opens and closes one connection as the pool would, so that a wrong address, TLS
    /// setting or certificate is reported at once and plainly, rather than after the
    /// pool has retried for a minute.
    /// - Throws: ``ConfigurationProblem`` saying where it tried to connect and why it could not
    ///   (never the password).
    public func checkConnection() async throws {
        do {
            let connection = try await PostgresConnection.connect(configuration: singleConnection(applicationName: "keyway"), id: 0, logger: logger)
            try await connection.close()
        } catch {
            let place = "\(configuration.host ?? "localhost"):\(configuration.port ?? 5432)"
            throw ConfigurationProblem(
                "Cannot connect to PostgreSQL at \(place) (sslmode=\(sslMode.rawValue)): \(Self.reason(error, host: configuration.host))"
            )
        }
    }

    /// What went wrong, from the server's message or the network / TLS error beneath
    /// (PSQLError's own description hides both).
    static func reason(_ error: any Error, host: String? = nil) -> String {
        guard let error = error as? PSQLError else { return String(describing: error) }
        if let message = error.serverInfo?[.message] { return message }
        if error.code == .sslUnsupported { return "the server does not offer TLS" }
        guard let underlying = error.underlying else { return "\(error.code)" }
        if (underlying as? NIOSSLExtraError) == .failedToValidateHostname {
            return "the server's certificate does not name '\(host ?? "")' (verify-full checks the host name; verify-ca does not)"
        }
        let described = String(describing: underlying)
        if described.contains("CERTIFICATE_VERIFY_FAILED") {
            return "the server's certificate is not signed by a trusted CA (CERTIFICATE_VERIFY_FAILED)"
        }
        return described
    }

    // MARK: Query helpers

    /// Runs `body` in a transaction, rethrowing the error that made it fail rather than PostgresNIO's wrapper,
    /// so domain errors (and unique violations) reach callers as themselves.
    func transaction<Result: Sendable>(_ body: (PostgresConnection) async throws -> Result) async throws -> Result {
        do {
            return try await client.withConnection { connection in
                // PostgresNIO lets a query run on when its task is cancelled; closing the
                // connection ends it, so a cancelled caller (the shutdown deadline) is never
                // held by a server that stopped answering.
                try await withTaskCancellationHandler {
                    try await connection.withTransaction(logger: logger) { try await body($0) }
                } onCancel: {
                    connection.close().whenComplete { _ in }
                }
            }
        } catch let error as PostgresTransactionError {
            throw error.closureError ?? error.beginError ?? error.commitError ?? error
        }
    }

    /// Runs a prepared statement (parsed and planned once per connection) and decodes its first row.
    private func first<Statement: PostgresPreparedStatement>(_ statement: Statement) async throws -> Statement.Row? {
        for try await row in try await client.execute(statement, logger: logger) { return row }
        return nil
    }

    private func first<Row: PostgresDecodable>(_ query: PostgresQuery, as type: Row.Type) async throws -> Row? {
        for try await row in try await client.query(query, logger: logger).decode(Row.self) { return row }
        return nil
    }

    private func first<each Column: PostgresDecodable>(
        _ query: PostgresQuery,
        as type: (repeat each Column).Type
    ) async throws -> (repeat each Column)? {
        for try await row in try await client.query(query, logger: logger).decode((repeat each Column).self) { return row }
        return nil
    }

    private func all<each Column: PostgresDecodable>(
        _ query: PostgresQuery,
        as type: (repeat each Column).Type
    ) async throws -> [(repeat each Column)] {
        var rows: [(repeat each Column)] = []
        for try await row in try await client.query(query, logger: logger).decode((repeat each Column).self) { rows.append(row) }
        return rows
    }

    private static func digest(_ data: Data) throws -> KeyDigest {
        guard let digest = KeyDigest(bytes: data) else { throw SchemaError("a stored digest is not 32 bytes") }
        return digest
    }
}

extension Account {
    fileprivate init(row: (String, String, Int64)) {
        self.init(id: AccountID(rawValue: row.0), name: row.1, createdAt: Date(keywayMilliseconds: row.2))
    }
}

extension User {
    fileprivate init(row: (String, String, String?, Int64)) {
        self.init(id: UserID(rawValue: row.0), username: row.1, fullName: row.2, createdAt: Date(keywayMilliseconds: row.3))
    }
}

extension Member {
    fileprivate init(row: (String, String, String, String, Int64)) {
        self.init(
            id: MemberID(rawValue: row.0),
            accountID: AccountID(rawValue: row.1),
            email: row.2,
            role: MemberRole(rawValue: row.3) ?? .owner,
            createdAt: Date(keywayMilliseconds: row.4)
        )
    }
}

// MARK: Prepared statements of the request path

/// A user by one of the columns that identify it in an environment. Two statements
/// rather than one `id = $3 OR username = $3`: each is a single index lookup.
private struct UserLookup<Column: UserColumn>: PostgresPreparedStatement {
    static var name: String { "keyway_user_by_\(Column.name)" }
    static var sql: String {
        "SELECT id, username, full_name, created_at FROM users WHERE account_id = $1 AND environment = $2 AND \(Column.name) = $3"
    }
    typealias Row = User

    let environmentID: EnvironmentID
    let value: String

    func makeBindings() -> PostgresBindings {
        var bindings = PostgresBindings(capacity: 3)
        bindings.append(environmentID.accountID.rawValue)
        bindings.append(environmentID.environment.rawValue)
        bindings.append(value)
        return bindings
    }

    func decodeRow(_ row: PostgresRow) throws -> User {
        User(row: try row.decode((String, String, String?, Int64).self))
    }
}

private protocol UserColumn: Sendable {
    static var name: String { get }
}

private enum ByID: UserColumn {
    static let name = "id"
}

private enum ByUsername: UserColumn {
    static let name = "username"
}

/// Every key among `digests`: the batched lookup of keys no cache knows.
private struct KeysByDigest: PostgresPreparedStatement {
    static let name = "keyway_keys_by_digest"
    static let sql = "SELECT \(KeywayPostgresStore.keyColumns) FROM secret_keys WHERE digest = ANY($1)"
    typealias Row = SecretKeyRecord

    let digests: [KeyDigest]

    func makeBindings() -> PostgresBindings {
        var bindings = PostgresBindings(capacity: 1)
        bindings.append(digests.map { ByteBuffer(bytes: $0.bytes) })
        return bindings
    }

    func decodeRow(_ row: PostgresRow) throws -> SecretKeyRecord {
        try KeywayPostgresStore.record(row.decode(KeywayPostgresStore.KeyRow.self))
    }
}

/// Whether any environment allows an origin: a CORS preflight, which carries no token.
private struct OriginAllowed: PostgresPreparedStatement {
    static let name = "keyway_origin_allowed"
    static let sql = "SELECT 1 FROM environment_origins WHERE origin = $1 LIMIT 1"
    typealias Row = Int32

    let origin: String

    func makeBindings() -> PostgresBindings {
        var bindings = PostgresBindings(capacity: 1)
        bindings.append(origin)
        return bindings
    }

    func decodeRow(_ row: PostgresRow) throws -> Int32 {
        try row.decode(Int32.self)
    }
}
