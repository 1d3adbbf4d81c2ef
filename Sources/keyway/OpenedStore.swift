import Foundation
import KeywayCore
import KeywayHTTP
import KeywayPostgres
import KeywaySQLite
import Logging
import ServiceLifecycle

/// A store opened from the configuration, with what must run while it is used.
struct OpenedStore: Sendable {
    /// PostgreSQL's or SQLite's.
    let store: any KeywayStore
    /// What must run while the store is used: PostgreSQL's connection pool. None for SQLite.
    let services: [any Service]
    /// The migrations applied on opening: SQLite's pending ones. PostgreSQL applies none.
    let appliedMigrations: [String]
    /// The PostgreSQL store, whose schema only `keyway migrate` changes; `nil` on SQLite.
    let postgres: KeywayPostgresStore?

    /// Runs `body` while the services run, and cancels them once it returns.
    func run<Result: Sendable>(_ body: () async throws -> Result) async throws -> Result {
        try await withThrowingTaskGroup(of: Result?.self) { group in
            for service in services {
                group.addTask {
                    try await service.run()
                    return nil
                }
            }
            defer { group.cancelAll() }
            return try await body()
        }
    }
}

/// The one place a store is opened, for `serve`, `migrate` and every command that reads or
/// writes: PostgreSQL when `KEYWAY_DATABASE_URL` is set, otherwise the SQLite file with its
/// pending migrations applied.
///
/// PostgreSQL's `sslmode`, `sslrootcert` and `KEYWAY_DATABASE_CA_FILE` are checked here, then one
/// connection is tried, so a bad setting, address or certificate stops the command at once with
/// a plain message. Its schema is left as it is: `serve` and the commands refuse an out-of-date
/// one, `migrate` upgrades it.
/// - Parameter poolSize: PostgreSQL's connection count; the configured one when `nil`.
func openStore(_ configuration: KeywayConfiguration, poolSize: Int? = nil, logger: Logger) async throws -> OpenedStore {
    do {
        guard let url = configuration.databaseURL else {
            let applied = try KeywaySQLiteStore.migrate(path: configuration.databasePath)
            let store = try KeywaySQLiteStore(path: configuration.databasePath, migrate: false)
            return OpenedStore(store: store, services: [], appliedMigrations: applied, postgres: nil)
        }
        let store = try KeywayPostgresStore(
            settings: try PostgresConnectionSettings(url: url, caFile: configuration.databaseCAFile),
            poolSize: poolSize ?? configuration.databasePoolSize,
            connectTimeout: .milliseconds(configuration.databaseConnectTimeoutMilliseconds),
            lookupTimeout: .milliseconds(configuration.keyLookupTimeoutMilliseconds),
            logger: logger
        )
        try await store.checkConnection()
        return OpenedStore(store: store, services: [store], appliedMigrations: [], postgres: store)
    } catch let problem as ConfigurationProblem {
        throw CommandError(problem.description)
    } catch let problem as SchemaError {
        throw CommandError(problem.description)
    }
}

extension DatabaseOptions {
    /// Runs `body` with the store the environment and this command's options configure.
    func withStore<Result: Sendable>(_ body: (any KeywayStore) async throws -> Result) async throws -> Result {
        try await withStore(try configuration(), body)
    }

    /// Runs `body` with the configured store, refusing an out-of-date schema. A
    /// ``KeywayError`` from `body` is printed as its message.
    func withStore<Result: Sendable>(
        _ configuration: KeywayConfiguration,
        _ body: (any KeywayStore) async throws -> Result
    ) async throws -> Result {
        let opened = try await openStore(configuration, logger: Logger(label: "keyway.postgres"))
        do {
            return try await opened.run {
                do {
                    try await opened.store.requireCurrentSchema()
                } catch let problem as SchemaError {
                    throw CommandError(problem.description)
                }
                return try await body(opened.store)
            }
        } catch let error as KeywayError {
            throw CommandError(error.message)
        }
    }
}

extension KeywayStore {
    /// Throws ``KeywayError/accountNotFound(_:)`` unless the account exists.
    func requireAccount(_ id: AccountID) async throws {
        guard try await account(id) != nil else { throw KeywayError.accountNotFound(id) }
    }
}
