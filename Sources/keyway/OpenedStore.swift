import Foundation
import KeywayCore
import KeywayHTTP
import KeywayPostgres
import KeywaySQLite
import Logging
import ServiceLifecycle

/// A store opened from the settings, with what must run while it is used.
struct OpenedStore: Sendable {
    /// PostgreSQL's or SQLite's.
    let store: any KeywayStore
    /// The migrations applied on opening: SQLite's pending ones. PostgreSQL applies none.
    let appliedMigrations: [String]
    /// The PostgreSQL store, whose pool must run while it is used and whose schema only
    /// `keyway migrate` changes; `nil` on SQLite.
    let postgres: KeywayPostgresStore?

    /// What must run beside the server: PostgreSQL's connection pool. None for SQLite.
    var services: [any Service] { postgres.map { [$0] } ?? [] }

    /// Where sign-in attempts are counted for every instance together: PostgreSQL, which
    /// they share. On SQLite, one instance per file, that instance's memory is the whole count.
    var attemptLedger: (any AttemptLedger)? { postgres }

    /// Runs `body` while the store's services run, and stops them once it returns.
    func run<Result: Sendable>(_ body: () async throws -> Result) async throws -> Result {
        guard let postgres else { return try await body() }
        return try await postgres.run(while: body)
    }
}

/// The one place a store is opened, for `serve`, `migrate` and every command that reads or
/// writes: PostgreSQL when `KEYWAY_DATABASE_URL` is set, otherwise the SQLite file with its
/// pending migrations applied.
///
/// For PostgreSQL one connection is tried first, so a bad address, TLS setting or certificate
/// stops the command at once with a plain message. Its schema is left as it is: `serve` and
/// the commands refuse an out-of-date one, `migrate` upgrades it.
/// - Parameters:
///   - poolSize: PostgreSQL's connection count; the configured one when `nil`.
///   - keepPoolOpen: Keep every connection open (the server), not only those in use (a command).
func openStore(_ settings: Settings, poolSize: Int? = nil, keepPoolOpen: Bool = false, logger: Logger) async throws -> OpenedStore {
    do {
        guard let postgres = settings.postgres else {
            let applied = try KeywaySQLiteStore.migrate(path: settings.databasePath)
            let store = try KeywaySQLiteStore(path: settings.databasePath, migrate: false)
            return OpenedStore(store: store, appliedMigrations: applied, postgres: nil)
        }
        let store = try KeywayPostgresStore(
            settings: postgres,
            poolSize: poolSize ?? settings.databasePoolSize,
            connectTimeout: .milliseconds(settings.databaseConnectTimeoutMilliseconds),
            lookupTimeout: .milliseconds(settings.keyLookupTimeoutMilliseconds),
            keepPoolOpen: keepPoolOpen,
            logger: logger
        )
        try await store.checkConnection()
        return OpenedStore(store: store, appliedMigrations: [], postgres: store)
    } catch let problem as ConfigurationError {
        throw CommandError(problem.description)
    } catch let problem as SchemaError {
        throw CommandError(problem.description)
    }
}

extension DatabaseOptions {
    /// Runs `body` with the store the environment and this command's options configure.
    func withStore<Result: Sendable>(_ body: (any KeywayStore) async throws -> Result) async throws -> Result {
        try await withStore(try settings(), body)
    }

    /// Runs `body` with the configured store, refusing an out-of-date schema. A
    /// ``KeywayError`` from `body` is printed as its message.
    func withStore<Result: Sendable>(
        _ settings: Settings,
        _ body: (any KeywayStore) async throws -> Result
    ) async throws -> Result {
        let opened = try await openStore(settings, logger: Logger(label: "keyway.postgres"))
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
