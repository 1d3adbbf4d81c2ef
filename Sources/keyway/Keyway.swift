public import ArgumentParser
import Foundation
import Hummingbird
public import KeywayCore
import KeywayHTTP
import KeywayPostgres
import KeywaySQLite
import Logging
import Metrics
import Prometheus
import ServiceLifecycle
import UnixSignals

#if canImport(Glibc)
import Glibc
#endif

@main
struct Keyway: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "keyway",
        abstract: "Keyway: API keys, sandboxed environments and users for your backend.",
        discussion: "Settings come from KEYWAY_* environment variables; command-line options override them.",
        subcommands: [Serve.self, Migrate.self, Accounts.self, Keys.self, SigningKeys.self, Origins.self],
        defaultSubcommand: nil
    )
}

/// Options every command that opens the database shares.
struct DatabaseOptions: ParsableArguments {
    @Option(name: .long, help: ArgumentHelp("SQLite database file. [env: KEYWAY_DATABASE] [default: keyway-data/keyway.sqlite]", valueName: "path"))
    var database: String?

    /// The configuration from the environment, with this command's options applied.
    func configuration() throws -> KeywayConfiguration {
        var configuration: KeywayConfiguration
        do {
            configuration = try KeywayConfiguration(environment: ProcessInfo.processInfo.environment)
        } catch {
            throw CommandError("\(error)")
        }
        if let database { configuration.databasePath = database }
        return configuration
    }

    /// The user-token service: the master key from `KEYWAY_MASTER_KEY`, or the
    /// `master.key` file beside the database, created on first use.
    func userTokens(_ configuration: KeywayConfiguration, store: any KeywayStore, logger: Logger) async throws -> UserTokens {
        let masterKey: MasterKey
        if let configured = configuration.masterKey {
            masterKey = try MasterKey(base64: configured)
        } else if configuration.databaseURL != nil {
            // Instances on one PostgreSQL must share the key that seals signing keys.
            throw CommandError(
                "KEYWAY_MASTER_KEY is required with KEYWAY_DATABASE_URL, the same on every instance (generate one with: openssl rand -base64 32)."
            )
        } else {
            let folder = URL(fileURLWithPath: configuration.databasePath).deletingLastPathComponent()
            // A new key is made only while nothing is sealed: a lost file must not pass for a first start.
            do {
                masterKey = try MasterKey.loadOrCreate(
                    file: folder.appendingPathComponent("master.key").path,
                    mayCreate: !(try await store.hasSigningKeys()),
                    logger: logger
                )
            } catch let problem as ConfigurationProblem {
                throw CommandError(problem.description)
            }
        }
        return UserTokens(
            store: store,
            masterKey: masterKey,
            issuer: configuration.effectivePublicURL,
            lifetime: TimeInterval(configuration.userTokenMinutes * 60)
        )
    }

    /// Runs `body` with the store the environment and this command's options configure.
    func withStore<Result: Sendable>(_ body: (any KeywayStore) async throws -> Result) async throws -> Result {
        try await withStore(try configuration(), body)
    }

    /// Runs `body` with the configured store: PostgreSQL when `KEYWAY_DATABASE_URL`
    /// is set (its connection pool running meanwhile), otherwise the SQLite file,
    /// migrated as `serve` does. A ``KeywayError`` from `body` is printed as its message.
    func withStore<Result: Sendable>(
        _ configuration: KeywayConfiguration,
        _ body: (any KeywayStore) async throws -> Result
    ) async throws -> Result {
        do {
            guard let url = configuration.databaseURL else {
                return try await body(try openSQLite(configuration))
            }
            return try await withPostgres(url: url, configuration, body)
        } catch let error as KeywayError {
            throw CommandError(error.message)
        }
    }

    private func withPostgres<Result: Sendable>(
        url: String,
        _ configuration: KeywayConfiguration,
        _ body: (any KeywayStore) async throws -> Result
    ) async throws -> Result {
        let store = try await openPostgres(url: url, configuration, logger: Logger(label: "keyway.postgres"))
        return try await withThrowingTaskGroup(of: Result?.self) { group in
            group.addTask {
                await store.run()
                return nil
            }
            defer { group.cancelAll() }
            do {
                try await store.requireCurrentSchema()
            } catch let problem as SchemaError {
                throw CommandError(problem.description)
            }
            return try await body(store)
        }
    }

    /// The one place a PostgreSQL store is opened: the URL's `sslmode`, its `sslrootcert`
    /// and `KEYWAY_DATABASE_CA_FILE` are checked here, then one connection is tried, so a
    /// bad setting, address or certificate stops the command at once with a plain message.
    func openPostgres(
        url: String,
        _ configuration: KeywayConfiguration,
        poolSize: Int? = nil,
        logger: Logger
    ) async throws -> KeywayPostgresStore {
        do {
            let store = try KeywayPostgresStore(
                settings: try PostgresConnectionSettings(url: url, caFile: configuration.databaseCAFile),
                poolSize: poolSize ?? configuration.databasePoolSize,
                connectTimeout: .milliseconds(configuration.databaseConnectTimeoutMilliseconds),
                lookupTimeout: .milliseconds(configuration.keyLookupTimeoutMilliseconds),
                logger: logger
            )
            try await store.checkConnection()
            return store
        } catch let problem as ConfigurationProblem {
            throw CommandError(problem.description)
        }
    }

    func openSQLite(_ configuration: KeywayConfiguration) throws -> KeywaySQLiteStore {
        do {
            return try KeywaySQLiteStore(path: configuration.databasePath, migrate: true)
        } catch let error as SchemaError {
            throw CommandError(error.description)
        }
    }
}

struct Serve: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Run the HTTP server.",
        discussion: """
            On SQLite (the default) it applies pending migrations first; on PostgreSQL (KEYWAY_DATABASE_URL) it refuses \
            an out-of-date schema: run `keyway migrate`. Stops gracefully on SIGTERM or SIGINT, finishing requests in flight \
            and writing keys' last-used times, within KEYWAY_SHUTDOWN_TIMEOUT_SECONDS (default 10) even when the database \
            is gone; last-used times not written by then are abandoned and logged.

            TLS to PostgreSQL follows libpq: sslmode=disable, prefer (the default), require, verify-ca or verify-full in \
            KEYWAY_DATABASE_URL; the CA file is KEYWAY_DATABASE_CA_FILE or the URL's sslrootcert.
            """
    )

    @Option(help: ArgumentHelp("Address to listen on. [env: KEYWAY_HOST] [default: 127.0.0.1]", valueName: "address"))
    var host: String?

    @Option(help: ArgumentHelp("Port to listen on; 0 picks a free one. [env: KEYWAY_PORT] [default: 8080]", valueName: "port"))
    var port: Int?

    @OptionGroup var database: DatabaseOptions

    func validate() throws {
        if let port, !(0...65535).contains(port) {
            throw ValidationError("--port must be from 0 to 65535.")
        }
    }

    func run() async throws {
        var configuration = try database.configuration()
        if let host { configuration.host = host }
        if let port { configuration.port = port }
        let logLevel = configuration.logLevel
        LoggingSystem.bootstrap { label in
            var handler = StreamLogHandler.standardError(label: label)
            handler.logLevel = logLevel
            return handler
        }
        let registry = PrometheusCollectorRegistry()
        MetricsSystem.bootstrap(PrometheusMetricsFactory(registry: registry))
        let logger = Logger(label: "keyway")

        let store: any KeywayStore
        var services: [any Service] = []
        if let url = configuration.databaseURL {
            // PostgreSQL: `serve` never migrates; it refuses an out-of-date schema before listening.
            let postgres = try await database.openPostgres(url: url, configuration, logger: logger)
            services.append(postgres)
            store = postgres
            logger.info(
                "using PostgreSQL",
                metadata: ["database.pool_size": "\(configuration.databasePoolSize)", "database.sslmode": "\(postgres.sslMode.rawValue)"]
            )
        } else {
            store = try database.openSQLite(configuration)
            logger.info("using SQLite", metadata: ["database.path": "\(configuration.databasePath)"])
        }
        let keys = SecretKeys(
            store: store,
            inactiveCacheLimit: configuration.keyCacheLimit,
            generationLimit: configuration.keyGenerationLimit,
            logger: logger
        )
        let userTokens = try await database.userTokens(configuration, store: store, logger: logger)
        let app = buildApplication(
            configuration: configuration,
            store: store,
            keys: keys,
            metrics: registry,
            userTokens: userTokens,
            logger: logger
        )
        // The app is last, so on SIGTERM it stops first: in-flight requests drain, then the pool closes.
        var groupConfiguration = ServiceGroupConfiguration(
            services: services + [app],
            gracefulShutdownSignals: [.sigterm, .sigint],
            logger: logger
        )
        // A stop is bounded whatever the database does: after the timeout what is still running
        // is cancelled (the flush of last-used times logs what it abandons), and anything that
        // ignores cancellation a second later aborts the process rather than hang it.
        groupConfiguration.maximumGracefulShutdownDuration = .seconds(configuration.shutdownTimeoutSeconds)
        groupConfiguration.maximumCancellationDuration = .seconds(1)
        let group = ServiceGroup(configuration: groupConfiguration)
        do {
            try await group.run()
        } catch let problem as SchemaError {
            throw CommandError(problem.description)
        }
    }
}

struct Migrate: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Create or upgrade the database schema.",
        discussion: """
            Safe to run repeatedly, and from several processes at once on PostgreSQL. `serve` also runs it on the \
            embedded SQLite database, never on PostgreSQL.
            """
    )

    @OptionGroup var database: DatabaseOptions

    func run() async throws {
        let configuration = try database.configuration()
        let applied: [String]
        let name: String
        if let url = configuration.databaseURL {
            name = "PostgreSQL"
            let store = try await database.openPostgres(url: url, configuration, poolSize: 2, logger: Logger(label: "keyway.postgres"))
            applied = try await withThrowingTaskGroup(of: [String]?.self) { group in
                group.addTask {
                    await store.run()
                    return nil
                }
                defer { group.cancelAll() }
                return try await store.migrate()
            }
        } else {
            name = configuration.databasePath
            applied = try KeywaySQLiteStore.migrate(path: configuration.databasePath)
        }
        for migration in applied { print("Applied migration: \(migration)") }
        print("Database \(name) is up to date.")
    }
}

struct Accounts: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Create and list accounts.",
        subcommands: [Create.self, List.self]
    )

    struct Create: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Create an account with its development and production environments.",
            discussion: "Prints the new account's id."
        )

        @Option(help: "The company's name.")
        var name: String

        @OptionGroup var database: DatabaseOptions

        func validate() throws {
            let trimmed = name.trimmingCharacters(in: .whitespacesAndNewlines)
            guard !trimmed.isEmpty, trimmed.unicodeScalars.count <= UserInput.maximumLength,
                !trimmed.unicodeScalars.contains(where: { $0.properties.generalCategory == .control })
            else {
                throw ValidationError("--name must be 1 to \(UserInput.maximumLength) characters with no control characters.")
            }
        }

        func run() async throws {
            try await database.withStore { (store: any KeywayStore) async throws -> Void in
                let account = try await store.createAccount(name: name.trimmingCharacters(in: .whitespacesAndNewlines), at: Date())
                print(account.id)
            }
        }
    }

    struct List: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "List accounts, oldest first.")

        @OptionGroup var database: DatabaseOptions

        func run() async throws {
            try await database.withStore { (store: any KeywayStore) async throws -> Void in
                let accounts = try await store.accounts()
                if accounts.isEmpty {
                    print("No accounts yet. Create one with: keyway accounts create --name \"Acme\"")
                    return
                }
                print(table(["ACCOUNT", "NAME", "CREATED"], accounts.map { [$0.id.rawValue, $0.name, $0.createdAt.formatted(.iso8601)] }))
            }
        }
    }
}

struct Keys: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Generate and list secret API keys.",
        subcommands: [Generate.self, List.self]
    )

    struct Generate: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Generate an environment's secret key, revoking its previous key immediately.",
            discussion: """
                The key is printed once, to standard output, and never again: store it in a secrets manager.
                With --output it is written to a new file with mode 0600 and only its hint is printed.
                A running server stops accepting the previous key within KEYWAY_REVOCATION_POLL_MS.
                """
        )

        @OptionGroup var target: EnvironmentOptions

        @Option(help: ArgumentHelp("Write the key to this new file (mode 0600) instead of standard output.", valueName: "file"))
        var output: String?

        @OptionGroup var database: DatabaseOptions

        func run() async throws {
            let configuration = try database.configuration()
            if let output, FileManager.default.fileExists(atPath: output) {
                throw CommandError("\(output) already exists; choose a new file so no key is overwritten.")
            }
            // The file is made before the key: a file that cannot be written must fail the
            // command while the previous key still works, not after it was revoked.
            let file = try output.map { try SecretFile(creating: $0, capacity: 64) }
            try await database.withStore(configuration) { (store: any KeywayStore) async throws -> Void in
                var logger = Logger(label: "keyway.cli")
                logger.logLevel = .warning
                // The same limit as the dashboard's, counted in the database, so a script looping
                // regenerations is refused too.
                let keys = SecretKeys(store: store, generationLimit: configuration.keyGenerationLimit, logger: logger)
                let environmentID = target.environmentID
                let generated = try await keys.generate(for: environmentID, createdBy: "cli").key
                guard let file else {
                    print(generated.revealPlaintext())
                    return
                }
                do {
                    try file.write(generated.revealPlaintext() + "\n")
                } catch {
                    // The previous key is revoked already: this is the only copy of the new one.
                    FileHandle.standardError.write(Data("\(error) The new key is printed below instead; store it now.\n".utf8))
                    print(generated.revealPlaintext())
                    throw ExitCode.failure
                }
                print("Wrote the new \(target.environment.rawValue) key \(generated.hint) to \(file.path) (mode 0600).")
            }
        }
    }

    struct List: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "List an account's keys by hint. Secrets are never shown."
        )

        @OptionGroup var target: AccountOptions

        @OptionGroup var database: DatabaseOptions

        func run() async throws {
            try await database.withStore { (store: any KeywayStore) async throws -> Void in
                guard try await store.account(target.accountID) != nil else {
                    throw KeywayError.accountNotFound(target.accountID)
                }
                let records = try await store.secretKeys(for: target.accountID)
                if records.isEmpty {
                    print("No keys yet. Generate one with: keyway keys generate --account \(target.account) --environment development")
                    return
                }
                let rows = records.map { record in
                    [
                        record.hint, record.environmentID.environment.rawValue,
                        record.revokedAt.map { "revoked \($0.formatted(.iso8601))" } ?? "active",
                        record.createdAt.formatted(.iso8601), record.createdBy,
                        record.lastUsedAt?.formatted(.iso8601) ?? "never",
                    ]
                }
                print(table(["KEY", "ENVIRONMENT", "STATUS", "CREATED", "BY", "LAST USED"], rows))
            }
        }
    }
}

extension KeywayCore.Environment: ExpressibleByArgument {}

struct SigningKeys: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "signing-keys",
        abstract: "Manage the keys that sign an environment's user tokens.",
        subcommands: [Rotate.self, List.self]
    )

    struct Rotate: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Start signing an environment's user tokens with a new key.",
            discussion: """
                Tokens signed by the previous key keep working until they expire, and its public key stays
                in the JWKS until then (at most an hour).
                """
        )

        @OptionGroup var target: EnvironmentOptions

        @OptionGroup var database: DatabaseOptions

        func run() async throws {
            let configuration = try database.configuration()
            try await database.withStore(configuration) { (store: any KeywayStore) async throws -> Void in
                guard try await store.account(target.accountID) != nil else {
                    throw KeywayError.accountNotFound(target.accountID)
                }
                let tokens = try await database.userTokens(configuration, store: store, logger: Logger(label: "keyway.cli"))
                let key = try await tokens.rotate(target.environmentID)
                print("New \(target.environment.rawValue) signing key \(key.id); the previous one stays published until its tokens expire.")
            }
        }
    }

    struct List: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "List an environment's signing keys (public data only).")

        @OptionGroup var target: EnvironmentOptions

        @OptionGroup var database: DatabaseOptions

        func run() async throws {
            try await database.withStore { (store: any KeywayStore) async throws -> Void in
                let records = try await store.signingKeys(for: target.environmentID)
                if records.isEmpty {
                    print("No signing key yet; the first user token creates one.")
                    return
                }
                print(
                    table(
                        ["KID", "CREATED", "STATUS"],
                        records.map {
                            [$0.id, $0.createdAt.formatted(.iso8601), $0.retiredAt.map { "retired \($0.formatted(.iso8601))" } ?? "active"]
                        }
                    )
                )
            }
        }
    }
}

struct Origins: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Set which browser origins may call user-token endpoints (CORS).",
        subcommands: [SetOrigins.self, List.self]
    )

    struct SetOrigins: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "set",
            abstract: "Replace an environment's allowed origins.",
            discussion: "Each origin is scheme://host[:port], e.g. https://app.example.com. Give none to allow no origin."
        )

        @OptionGroup var target: EnvironmentOptions

        @Argument(help: "The allowed origins.")
        var origins: [String] = []

        @OptionGroup var database: DatabaseOptions

        func validate() throws {
            for origin in origins {
                do {
                    _ = try BrowserOrigin.normalized(origin)
                } catch {
                    throw ValidationError(error.message)
                }
            }
        }

        func run() async throws {
            // Stored as browsers send them, so the CORS check is a plain comparison.
            let origins = try origins.map { origin in try BrowserOrigin.normalized(origin) }
            try await database.withStore { (store: any KeywayStore) async throws -> Void in
                try await store.setAllowedOrigins(origins, for: target.environmentID)
                print(
                    origins.isEmpty
                        ? "No origin may call user-token endpoints of \(target.environment.rawValue)."
                        : "Allowed origins for \(target.environment.rawValue): \(origins.joined(separator: ", "))"
                )
            }
        }
    }

    struct List: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Show an account's allowed origins per environment.")

        @OptionGroup var target: AccountOptions

        @OptionGroup var database: DatabaseOptions

        func run() async throws {
            try await database.withStore { (store: any KeywayStore) async throws -> Void in
                for environment in KeywayCore.Environment.allCases {
                    let origins = try await store.allowedOrigins(for: EnvironmentID(accountID: target.accountID, environment: environment))
                    print("\(environment.rawValue): \(origins.isEmpty ? "(none)" : origins.joined(separator: " "))")
                }
            }
        }
    }
}

/// A failure while running a command (as opposed to bad arguments): printed without the usage text.
struct CommandError: Error, CustomStringConvertible {
    let description: String
    init(_ description: String) { self.description = description }
}

/// Creates `path` exclusively with mode 0600, so the key is never readable by others, even briefly.
/// A new file (mode 0600) for a secret, created and given its space before the
/// secret exists, so that once there is a secret nothing is left that can fail but the write.
final class SecretFile {
    let path: String
    private let descriptor: Int32
    private var written = false

    /// Creates `path`, refusing to overwrite anything, with `capacity` bytes reserved.
    init(creating path: String, capacity: Int) throws {
        let descriptor = open(path, O_WRONLY | O_CREAT | O_EXCL, 0o600)
        guard descriptor >= 0 else {
            throw CommandError("Cannot create \(path): \(String(cString: strerror(errno))).")
        }
        // Reserve the space now: a full disk must fail here, before a key is generated.
        let reserved = posix_fallocate(descriptor, 0, off_t(capacity))
        guard reserved == 0 || reserved == EOPNOTSUPP || reserved == EINVAL else {
            close(descriptor)
            unlink(path)
            throw CommandError("Cannot reserve space in \(path): \(String(cString: strerror(reserved))).")
        }
        self.path = path
        self.descriptor = descriptor
    }

    /// Writes `contents` and syncs them to disk.
    func write(_ contents: String) throws {
        let bytes = Array(contents.utf8)
        let count = bytes.withUnsafeBytes { Glibc.write(descriptor, $0.baseAddress, $0.count) }
        guard count == bytes.count, ftruncate(descriptor, off_t(bytes.count)) == 0, fsync(descriptor) == 0 else {
            throw CommandError("Cannot write \(path): \(String(cString: strerror(errno))).")
        }
        written = true
    }

    deinit {
        close(descriptor)
        // A file nothing was written to (the generation failed) is not left behind.
        if !written { unlink(path) }
    }
}

/// Left-aligned columns, two spaces apart.
func table(_ header: [String], _ rows: [[String]]) -> String {
    let all = [header] + rows
    let widths = header.indices.map { column in all.map { $0[column].count }.max() ?? 0 }
    return all.map { row in
        row.enumerated().map { column, cell in
            column == row.count - 1 ? cell : cell.padding(toLength: widths[column], withPad: " ", startingAt: 0)
        }.joined(separator: "  ")
    }.joined(separator: "\n")
}

/// `--account` and `--environment`, for commands that act on one environment.
struct EnvironmentOptions: ParsableArguments {
    @Option(help: ArgumentHelp("The account's id (acct_…).", valueName: "id"))
    var account: String

    @Option(help: ArgumentHelp("development or production.", valueName: "environment"))
    var environment: KeywayCore.Environment

    var accountID: AccountID { AccountID(rawValue: account) }
    var environmentID: EnvironmentID { EnvironmentID(accountID: accountID, environment: environment) }
}

/// `--account`, for commands that act on a whole account.
struct AccountOptions: ParsableArguments {
    @Option(help: ArgumentHelp("The account's id (acct_…).", valueName: "id"))
    var account: String

    var accountID: AccountID { AccountID(rawValue: account) }
}
