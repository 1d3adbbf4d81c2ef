package import Foundation
public import KeywayCore
public import Logging
import NIOSSL
import PostgresNIO
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
public final class KeywayPostgresStore: KeywayStore, Service {
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
    let keyLookups: BatchedLookup<KeyDigest, SecretKeyRecord>
    let makeUserID: @Sendable (Date) -> UserID

    /// - Parameters:
    ///   - settings: Where and how to connect, from ``PostgresConnectionSettings``.
    ///   - poolSize: Most connections this instance opens.
    ///   - connectTimeout: How long to wait for a new connection.
    ///   - lookupTimeout: How long a lookup of a key no cache knows may wait for the database
    ///     before it fails with `service_unavailable`.
    ///   - keepPoolOpen: Open all `poolSize` connections and keep them (a server), rather than
    ///     as needed (a command). PostgresNIO queues every request while a connection attempt
    ///     is failing, even with idle connections open; a pool that never needs a new login keeps
    ///     serving when the database refuses new ones (too many clients, a role locked in a
    ///     failover), and revocations keep their bound.
    /// - Throws: when the TLS context cannot be built.
    public convenience init(
        settings: PostgresConnectionSettings,
        poolSize: Int = 10,
        connectTimeout: Duration = .seconds(5),
        lookupTimeout: Duration = .seconds(5),
        keepPoolOpen: Bool = false,
        logger: Logger
    ) throws {
        try self.init(
            settings: settings,
            poolSize: poolSize,
            keepPoolOpen: keepPoolOpen,
            connectTimeout: connectTimeout,
            lookupTimeout: lookupTimeout,
            logger: logger,
            makeUserID: UserID.generate(at:)
        )
    }

    /// - Parameter makeUserID: Draws new users' identifiers; tests pass one that collides on purpose.
    package init(
        settings: PostgresConnectionSettings,
        poolSize: Int,
        keepPoolOpen: Bool = false,
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
        if keepPoolOpen { configuration.options.minimumConnections = poolSize }
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
    /// - Throws: ``ConfigurationError`` when the URL or the CA file cannot be used.
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

    /// Runs `body` while the connection pool runs, and stops the pool once it returns:
    /// how a command, a tool or a test uses the store outside a service group.
    public func run<Result: Sendable>(while body: () async throws -> Result) async throws -> Result {
        try await withThrowingTaskGroup(of: Void.self, returning: Result.self) { group in
            group.addTask { await self.run() }
            defer { group.cancelAll() }
            return try await body()
        }
    }

    /// Applies pending migrations. Safe to run from several processes at once.
    public func migrate() async throws -> [String] {
        try await KeywayPostgresSchema.migrate(client, logger: logger)
    }

    /// Throws ``SchemaError`` when the schema needs `keyway migrate`.
    public func requireCurrentSchema() async throws {
        try await KeywayPostgresSchema.requireCurrent(client, logger: logger)
    }

    // MARK: Operations

    /// Runs one administrative statement (for tests and tooling), unescaped.
    package func execute(_ sql: String) async throws {
        try await client.query(PostgresQuery(unsafeSQL: sql), logger: logger)
    }

    public func checkHealth() async throws {
        _ = try await first("SELECT 1", as: Int32.self)
    }

    /// The settings of a connection outside the pool, with the pool's address, credentials and TLS.
    func singleConnection(applicationName: String) -> PostgresConnection.Configuration {
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
    /// - Throws: ``ConfigurationError`` saying where it tried to connect and why it could not
    ///   (never the password).
    public func checkConnection() async throws {
        do {
            let connection = try await PostgresConnection.connect(configuration: singleConnection(applicationName: "keyway"), id: 0, logger: logger)
            try await connection.close()
        } catch {
            let place = "\(configuration.host ?? "localhost"):\(configuration.port ?? 5432)"
            throw ConfigurationError(
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
    func first<Statement: PostgresPreparedStatement>(_ statement: Statement) async throws -> Statement.Row? {
        for try await row in try await client.execute(statement, logger: logger) { return row }
        return nil
    }

    func first<Row: PostgresDecodable & Sendable>(_ query: PostgresQuery, as type: Row.Type) async throws -> Row? {
        for try await row in try await client.query(query, logger: logger).decode(Row.self) { return row }
        return nil
    }

    func first<each Column: PostgresDecodable & Sendable>(
        _ query: PostgresQuery,
        as type: (repeat each Column).Type
    ) async throws -> (repeat each Column)? {
        for try await row in try await client.query(query, logger: logger).decode((repeat each Column).self) { return row }
        return nil
    }

    func all<each Column: PostgresDecodable & Sendable>(
        _ query: PostgresQuery,
        as type: (repeat each Column).Type
    ) async throws -> [(repeat each Column)] {
        var rows: [(repeat each Column)] = []
        for try await row in try await client.query(query, logger: logger).decode((repeat each Column).self) { rows.append(row) }
        return rows
    }

}
