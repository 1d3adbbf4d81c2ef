import Foundation
import KeywayCore
import KeywayHTTP
import KeywayPostgres
import Logging

/// Everything `keyway` reads from `KEYWAY_*` variables: the HTTP server's own settings,
/// and what the executable opens and composes before handing it to the server — the
/// database, the master key, the key service's cache and limit, user-token lifetimes
/// and the log. Each variable is read and checked here, once.
struct Settings: Sendable {
    /// What the HTTP server reads.
    var server = ServerConfiguration()
    /// `KEYWAY_DATABASE`: the SQLite file, and the folder of `master.key` beside it.
    var databasePath = "keyway-data/keyway.sqlite"
    /// `KEYWAY_DATABASE_URL` with `KEYWAY_DATABASE_CA_FILE`: PostgreSQL, for many instances;
    /// `nil` runs on the SQLite file.
    var postgres: PostgresConnectionSettings?
    /// `KEYWAY_DATABASE_POOL_SIZE`: most PostgreSQL connections per instance.
    var databasePoolSize = 10
    /// `KEYWAY_DATABASE_CONNECT_TIMEOUT_MS`: how long to wait for a new PostgreSQL connection.
    var databaseConnectTimeoutMilliseconds = 5000
    /// `KEYWAY_KEY_LOOKUP_TIMEOUT_MS`: how long a request waits for PostgreSQL to look
    /// up a key no cache knows before it is answered 503 `service_unavailable`.
    var keyLookupTimeoutMilliseconds = 5000
    /// `KEYWAY_MASTER_KEY`: seals user-token signing keys at rest. When unset, `master.key`
    /// beside the database is used (and created); required with PostgreSQL.
    var masterKey: MasterKey?
    /// `KEYWAY_LOG_LEVEL`: trace, debug, info, notice, warning, error or critical.
    var logLevel: Logger.Level = .info
    /// `KEYWAY_KEY_CACHE_LIMIT`: how many revoked or unknown keys to remember, which
    /// bounds memory whatever keys callers invent.
    var keyCacheLimit = 10_000
    /// `KEYWAY_KEY_GENERATIONS_PER_MINUTE`: how many keys one environment may generate in
    /// any minute, from the dashboard or the CLI, on every instance together.
    var keyGenerationsPerMinute = 20
    /// `KEYWAY_USER_TOKEN_MINUTES`: lifetime of user tokens, 1 to 60.
    var userTokenMinutes = 30

    init() {}

    /// Reads every setting from `environment`.
    /// - Throws: ``ConfigurationError`` naming the variable and what it must be.
    init(environment: [String: String]) throws(ConfigurationError) {
        server = try ServerConfiguration(environment: environment)
        let settings = EnvironmentSettings(environment)
        if let path = settings.string("KEYWAY_DATABASE") { databasePath = path }
        if let url = settings.string("KEYWAY_DATABASE_URL") {
            postgres = try PostgresConnectionSettings(url: url, caFile: settings.string("KEYWAY_DATABASE_CA_FILE"))
        } else if let file = settings.string("KEYWAY_DATABASE_CA_FILE"), !FileManager.default.isReadableFile(atPath: file) {
            // Unused on SQLite, as it always was; but a file that cannot be read is a mistake either way.
            throw ConfigurationError(variable: "KEYWAY_DATABASE_CA_FILE", message: "names '\(file)', which is missing or not readable")
        }
        if let size = try settings.integer("KEYWAY_DATABASE_POOL_SIZE", in: 1...1000) { databasePoolSize = size }
        if let timeout = try settings.integer("KEYWAY_DATABASE_CONNECT_TIMEOUT_MS", in: 100...120_000) {
            databaseConnectTimeoutMilliseconds = timeout
        }
        if let timeout = try settings.integer("KEYWAY_KEY_LOOKUP_TIMEOUT_MS", in: 100...120_000) { keyLookupTimeoutMilliseconds = timeout }
        if let key = settings.string("KEYWAY_MASTER_KEY") { masterKey = try MasterKey(base64: key) }
        if let level = settings.string("KEYWAY_LOG_LEVEL") {
            guard let parsed = Logger.Level(rawValue: level.lowercased()) else {
                throw ConfigurationError(
                    variable: "KEYWAY_LOG_LEVEL",
                    message: "must be one of \(Logger.Level.allCases.map(\.rawValue).joined(separator: ", ")), not '\(level)'"
                )
            }
            logLevel = parsed
        }
        if let limit = try settings.integer("KEYWAY_KEY_CACHE_LIMIT", in: 1...10_000_000) { keyCacheLimit = limit }
        if let count = try settings.integer("KEYWAY_KEY_GENERATIONS_PER_MINUTE", in: 1...10_000) { keyGenerationsPerMinute = count }
        if let minutes = try settings.integer("KEYWAY_USER_TOKEN_MINUTES", in: 1...60) { userTokenMinutes = minutes }
    }

    /// ``keyGenerationsPerMinute`` as the limit the key service enforces.
    var keyGenerationLimit: KeyGenerationLimit {
        KeyGenerationLimit(count: keyGenerationsPerMinute, windowSeconds: 60)
    }
}
