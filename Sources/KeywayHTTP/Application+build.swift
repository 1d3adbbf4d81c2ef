public import Foundation
public import Hummingbird
import HummingbirdCore
public import KeywayCore
public import Logging
import NIOCore
public import Prometheus
import ServiceLifecycle

/// Builds the Keyway HTTP application: the composition root of the server.
///
/// - Parameters:
///   - configuration: Address, egress IPs and intervals.
///   - store: Where accounts, keys and users live.
///   - keys: The key service; pass the same instance that any in-process key
///     generation uses, so revocations take effect here before they return.
///   - metrics: The registry `/metrics` renders; bootstrap swift-metrics with it.
///   - userTokens: Mints and verifies user tokens for frontends. Listening on port 0 without
///     a public URL, its issuer becomes the URL with the port actually bound.
///   - attemptLedger: Where sign-in attempts are counted for every instance together (the
///     PostgreSQL store); `nil` counts them in this process, the whole count on SQLite.
///   - rateLimits: The environments' rate limits and the limiter; `nil` makes one on `store`.
///     Tests pass one whose clock they move.
///   - rateLimitExchange: Where instances share rate-limit counts (the PostgreSQL store); `nil`:
///     this process's memory is the whole count, as on SQLite.
///   - serviceTokens: The service tokens `/keys/verify` accepts; one over `store` when `nil`.
///   - webhooks: Webhook endpoints and the outbox; `nil` runs no dispatcher and hides the dashboard's Webhooks tab.
///   - webhookTransport: How deliveries are posted; AsyncHTTPClient bound to `KEYWAY_EGRESS_BIND` when `nil`.
///   - twoFactorSecrets: Seals members' TOTP secrets (under the master key).
///   - passwordHasher: How dashboard passwords are hashed (bcrypt unless a test says otherwise).
///   - now: The clock of the dashboard's sign-in throttles; tests pass one they move by hand.
///   - logger: The application logger.
public func buildApplication(
    configuration: ServerConfiguration,
    store: any KeywayStore,
    keys: SecretKeys,
    metrics: PrometheusCollectorRegistry,
    userTokens: UserTokens,
    attemptLedger: (any AttemptLedger)?,
    rateLimits: RateLimits? = nil,
    rateLimitExchange: (any RateLimitExchange)? = nil,
    serviceTokens: ServiceTokens? = nil,
    webhooks: Webhooks? = nil,
    webhookTransport: (any WebhookTransport)? = nil,
    twoFactorSecrets: TwoFactorSecrets,
    passwordHasher: any PasswordHasher = BcryptPasswordHasher(),
    now: @escaping @Sendable () -> Date = Date.init,
    logger: Logger
) -> some ApplicationProtocol {
    let rateLimits = rateLimits ?? RateLimits(store: store, sharesCounts: rateLimitExchange != nil)
    let serviceTokens = serviceTokens ?? ServiceTokens(store: store, logger: logger)
    let (router, controllers) = buildRouter(
        configuration: configuration,
        store: store,
        keys: keys,
        metrics: metrics,
        userTokens: userTokens,
        attemptLedger: attemptLedger,
        rateLimits: rateLimits,
        serviceTokens: serviceTokens,
        webhooks: webhooks,
        twoFactorSecrets: twoFactorSecrets,
        passwordHasher: passwordHasher,
        now: now
    )
    var services: [any Service] = [
        MaintenanceService(
            keys: keys,
            serviceTokens: serviceTokens,
            store: store,
            rateLimits: rateLimits,
            rateLimitExchange: rateLimitExchange,
            revocationPollInterval: .milliseconds(configuration.revocationPollMilliseconds),
            usageFlushInterval: .seconds(configuration.usageFlushSeconds),
            shutdownTimeout: .seconds(configuration.shutdownTimeoutSeconds),
            logger: logger,
            auditRetentionDays: configuration.auditRetentionDays
        )
    ]
    if let webhooks, configuration.webhookDelivery {
        if let webhookTransport {
            services.append(WebhookDispatcher(webhooks: webhooks, transport: webhookTransport, logger: logger))
        } else {
            let transport = HTTPClientWebhookTransport(localAddress: configuration.egressBind)
            var dispatcher = WebhookDispatcher(webhooks: webhooks, transport: transport, logger: logger)
            dispatcher.onStop = { await transport.shutdown() }
            services.append(dispatcher)
        }
    }
    if let address = configuration.metricsAddress {
        // Its own listener, which a firewall or the proxy keeps private; the main one no longer serves it.
        let metricsRouter = Router(context: KeywayRequestContext.self)
        let routeMethods = RouteMethods()
        metricsRouter.addMiddleware {
            RequestIDMiddleware()
            ErrorMappingMiddleware(routes: routeMethods)
        }
        metricsRouter.addRoutes(SystemController.metricsEndpoint(metrics: metrics, token: configuration.metricsToken))
        routeMethods.record(metricsRouter.routes)
        services.append(
            Application(
                router: metricsRouter,
                server: httpServer(configuration),
                configuration: .init(address: .hostname(address.host, port: address.port), serverName: "keyway"),
                logger: Logger(label: "keyway.metrics")
            )
        )
    }
    let finishing = LaneFinishing(serverName: "keyway", logger: logger)
    let lanes =
        configuration.lanes
        ? (
            ForwardAuthLaneAnswerer(controller: controllers.forwardAuth, finishing: finishing),
            KeyVerificationLaneAnswerer(controller: controllers.verification, finishing: finishing)
        ) : nil
    var app = Application(
        router: router,
        server: httpServer(configuration, lanes: lanes),
        configuration: .init(
            address: .hostname(configuration.host, port: configuration.port),
            serverName: "keyway",
            // Past the cap, connections wait in the listen queue instead of using up the
            // open-file limit that the database's files need too.
            availableConnectionsDelegate: MaximumAvailableConnections(configuration.maximumConnections, logger: logger)
        ),
        services: services,
        onServerRunning: { channel in
            // Port 0 is known only now; tokens must name the URL clients actually reach.
            if configuration.publicURL == nil, configuration.port == 0, let port = channel.localAddress?.port {
                var bound = configuration
                bound.port = port
                userTokens.useIssuer(bound.effectivePublicURL)
            }
        },
        logger: logger
    )
    app.beforeServerStarts {
        try await store.requireCurrentSchema()
        try await store.checkHealth()
        // Note where the revocation sequence stands before any key is cached.
        try await keys.followRevocations()
        // Limits are in memory before the first request: none is ever read on the request path.
        try await rateLimits.refresh()
        // And what the other instances counted, and how many they are: a new instance joining
        // a deployment under load does not start with a whole limit of its own.
        if let rateLimitExchange { try await rateLimits.exchange(through: rateLimitExchange) }
        try await serviceTokens.refresh()
    }
    return app
}

/// HTTP/1.1 with the idle timeout and the head and body deadlines.
func httpServer(
    _ configuration: ServerConfiguration,
    lanes: (forwardAuth: ForwardAuthLaneAnswerer, verification: KeyVerificationLaneAnswerer)? = nil
) -> HTTPServerBuilder {
    let idleTimeout = TimeAmount.seconds(Int64(configuration.idleTimeoutSeconds))
    let headTimeout = TimeAmount.seconds(Int64(configuration.requestHeadTimeoutSeconds))
    let bodyTimeout = TimeAmount.seconds(Int64(configuration.requestBodyTimeoutSeconds))
    return HTTPServerBuilder { responder in
        DeadlineHTTP1Channel(
            base: HTTP1Channel(responder: responder, configuration: .init(idleTimeout: idleTimeout)),
            headTimeout: headTimeout,
            bodyTimeout: bodyTimeout,
            lanes: lanes
        )
    }
}

/// The router alone.
func buildRouter(
    configuration: ServerConfiguration,
    store: any KeywayStore,
    keys: SecretKeys,
    metrics: PrometheusCollectorRegistry,
    userTokens: UserTokens,
    attemptLedger: (any AttemptLedger)?,
    rateLimits: RateLimits,
    serviceTokens: ServiceTokens,
    webhooks: Webhooks?,
    twoFactorSecrets: TwoFactorSecrets,
    passwordHasher: any PasswordHasher,
    now: @escaping @Sendable () -> Date
) -> (Router<KeywayRequestContext>, (forwardAuth: ForwardAuthController, verification: KeyVerificationController)) {
    let router = Router(context: KeywayRequestContext.self)
    let routeMethods = RouteMethods()
    // One gate for every way a key is used: the API, /auth and /keys/verify count alike.
    let rateLimitGate = RateLimitGate(limits: rateLimits)
    // The platform's other services and proxies: both decide through one KeyVerification.
    let verification = KeyVerification(keys: keys, rateLimits: rateLimitGate)
    let forwardAuth = ForwardAuthController(verification: verification, store: store)
    // Middleware must be added before routes: Hummingbird binds it at registration.
    router.addMiddleware {
        RequestIDMiddleware()
        MetricsMiddleware<KeywayRequestContext>()
        RequestLogMiddleware()
        ErrorMappingMiddleware(routes: routeMethods)
        NULRefusalMiddleware<KeywayRequestContext>()
        APIVersionMiddleware()
        ForwardAuthAnyMethodMiddleware(controller: forwardAuth)
    }
    let system = SystemController(store: store, metrics: metrics, egressIPs: configuration.egressIPs)
    router.addRoutes(system.operationalEndpoints)
    if configuration.metricsAddress == nil {
        router.addRoutes(SystemController.metricsEndpoint(metrics: metrics, token: configuration.metricsToken))
    }
    let users = UsersController(store: store, userTokens: userTokens)
    router.addRoutes(UserTokenController(store: store, userTokens: userTokens).endpoints)
    for prefix in [""] + APIVersion.pathVersions {
        router.addRoutes(system.publicEndpoints, atPath: RouterPath(prefix))
        router.group(RouterPath(prefix))
            .add(middleware: SecretKeyAuthenticator(keys: keys))
            .add(middleware: RateLimitMiddleware(gate: rateLimitGate))
            .group(context: AuthenticatedRequestContext.self)
            .add(middleware: NoStoreMiddleware())
            .addRoutes(users.endpoints)
    }
    let keyVerification = KeyVerificationController(verification: verification, serviceTokens: serviceTokens)
    router.addRoutes(keyVerification.endpoints)
    router.addRoutes(forwardAuth.endpoints)
    router.addRoutes(
        LeakedKeysController(
            keys: keys,
            signatures: configuration.secretScanningKeys,
            trustedProxies: configuration.trustedProxies,
            now: rateLimits.now
        ).endpoints
    )
    // The dashboard accepts only its session cookie; the API above only keys.
    let dashboard = DashboardController(
        store: store,
        keys: keys,
        hasher: passwordHasher,
        twoFactorSecrets: twoFactorSecrets,
        secureCookies: configuration.effectivePublicURL.lowercased().hasPrefix("https://"),
        publicURL: configuration.publicURL,
        egressIPs: configuration.egressIPs,
        trustedProxies: configuration.trustedProxies,
        throttleEntries: configuration.throttleEntries,
        attemptLedger: attemptLedger,
        rateLimits: rateLimits,
        webhooks: webhooks,
        now: now
    )
    router.addRoutes(dashboard.endpoints)
    routeMethods.record(router.routes)
    return (router, (forwardAuth, keyVerification))
}
