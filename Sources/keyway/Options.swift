public import ArgumentParser
import Foundation
public import KeywayCore
import KeywayHTTP
import KeywayPostgres
import KeywaySQLite
import Logging

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

extension KeywayCore.Environment: ExpressibleByArgument {}
