import ArgumentParser
import Hummingbird
import KeywayCore
import KeywayHTTP
import KeywayPostgres
import Logging
import Metrics
import Prometheus
import ServiceLifecycle
import UnixSignals

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
        var settings = try database.settings()
        if let host { settings.server.host = host }
        if let port { settings.server.port = port }
        let logLevel = settings.logLevel
        LoggingSystem.bootstrap { label in
            var handler = DeferredMetadataLogHandler(StreamLogHandler.standardError(label: label))
            handler.logLevel = logLevel
            return handler
        }
        let registry = PrometheusCollectorRegistry()
        MetricsSystem.bootstrap(PrometheusMetricsFactory(registry: registry))
        let logger = Logger(label: "keyway")

        // PostgreSQL: `serve` never migrates; it refuses an out-of-date schema before listening.
        let opened = try await openStore(settings, keepPoolOpen: true, logger: logger)
        let store = opened.store
        if let postgres = opened.postgres {
            logger.info(
                "using PostgreSQL",
                metadata: ["database.pool_size": "\(settings.databasePoolSize)", "database.sslmode": "\(postgres.sslMode.rawValue)"]
            )
        } else {
            logger.info("using SQLite", metadata: ["database.path": "\(settings.databasePath)"])
        }
        let keys = SecretKeys(
            store: store,
            inactiveCacheLimit: settings.keyCacheLimit,
            generationLimit: settings.keyGenerationLimit,
            logger: logger
        )
        let masterKey = try await database.masterKey(settings, store: store, logger: logger)
        let userTokens = database.userTokens(settings, store: store, masterKey: masterKey)
        let app = buildApplication(
            configuration: settings.server,
            store: store,
            keys: keys,
            metrics: registry,
            userTokens: userTokens,
            attemptLedger: opened.attemptLedger,
            rateLimitExchange: opened.postgres,
            webhooks: database.webhooks(settings, store: store, masterKey: masterKey),
            twoFactorSecrets: TwoFactorSecrets(masterKey: masterKey),
            logger: logger
        )
        // The app is last, so on SIGTERM it stops first: in-flight requests drain, then the pool closes.
        var groupConfiguration = ServiceGroupConfiguration(
            services: opened.services + [app],
            gracefulShutdownSignals: [.sigterm, .sigint],
            logger: logger
        )
        // A stop is bounded whatever the database does: after the timeout what is still running
        // is cancelled (the flush of last-used times logs what it abandons), and anything that
        // ignores cancellation a second later aborts the process rather than hang it.
        groupConfiguration.maximumGracefulShutdownDuration = .seconds(settings.server.shutdownTimeoutSeconds)
        groupConfiguration.maximumCancellationDuration = .seconds(1)
        let group = ServiceGroup(configuration: groupConfiguration)
        do {
            try await group.run()
        } catch let problem as SchemaError {
            throw CommandError(problem.description)
        }
    }
}
