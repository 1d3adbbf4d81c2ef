import Foundation
import Hummingbird
import KeywayCore
import Logging
import Prometheus
import Synchronization

/// Endpoints that need no key: health, metrics, the OpenAPI document, egress IPs.
struct SystemController {
    typealias Context = KeywayRequestContext

    let store: any KeywayStore
    let metrics: PrometheusCollectorRegistry
    let egressIPs: [String]
    /// The database's health, asked once however many probes arrive while it is asked.
    let readiness: SharedCheck

    init(store: any KeywayStore, metrics: PrometheusCollectorRegistry, egressIPs: [String]) {
        self.store = store
        self.metrics = metrics
        self.egressIPs = egressIPs
        self.readiness = SharedCheck { try await store.checkHealth() }
    }

    /// How long `/readyz` waits for the database.
    static let readinessTimeout: Duration = .seconds(2)

    /// Operational endpoints, served only at the root.
    var operationalEndpoints: RouteCollection<Context> {
        let routes = RouteCollection(context: Context.self)
        routes.get("healthz", use: health)
        routes.get("readyz", use: ready)
        routes.get("openapi.json", use: openAPI)
        return routes
    }

    /// Public API endpoints, also served under the older version prefixes.
    var publicEndpoints: RouteCollection<Context> {
        let routes = RouteCollection(context: Context.self)
        routes.get("ip-addresses", use: ipAddresses)
        return routes
    }

    /// `GET /healthz`: the process is up. Touches nothing else, so it measures the framework alone.
    @Sendable func health(_ request: Request, context: Context) -> StatusResponse {
        StatusResponse(status: "ok")
    }

    /// `GET /readyz`: the database answers.
    @Sendable func ready(_ request: Request, context: Context) async throws -> StatusResponse {
        // A pool waiting for an unreachable database, or SQLite waiting out its busy timeout
        // (10 s), must not hold the probe: answer at the deadline without waiting for the
        // check to let go, as a task group would. The check left running is the one the
        // next probes wait for, so unauthenticated probes cannot pile checks up.
        let reason: String
        switch await MaintenanceService.outcome(within: Self.readinessTimeout, { try await readiness.run() }) {
        case .written: return StatusResponse(status: "ready")
        case .failed(let error): reason = String(reflecting: error)
        case .timedOut: reason = "the database did not answer within \(Self.readinessTimeout)"
        case .cancelled: reason = "the probe was cancelled"
        }
        context.logger.warning("readiness check failed", metadata: ["error": "\(reason)"])
        throw KeywayError(.serviceUnavailable, "The database is not reachable; Keyway cannot serve requests yet.")
    }

    /// `GET /metrics` in the Prometheus text format; with a `token`, only for `Authorization: Bearer <token>`.
    static func metricsEndpoint(metrics: PrometheusCollectorRegistry, token: String?) -> RouteCollection<Context> {
        let routes = RouteCollection(context: Context.self)
        routes.get("metrics") { request, _ in
            if let token {
                // Compared by digest, so timing tells nothing about the token.
                guard case .success(let presented) = BearerCredential.parse(request.headers[values: .authorization]),
                    BrowserToken.constantTimeEquals(String(presented), token)
                else {
                    throw KeywayError(.metricsTokenRequired, "/metrics needs 'Authorization: Bearer <KEYWAY_METRICS_TOKEN>'.")
                }
            }
            var bytes: [UInt8] = []
            metrics.emit(into: &bytes)
            return Response(
                status: .ok,
                headers: [.contentType: "text/plain; version=0.0.4; charset=utf-8"],
                body: .init(byteBuffer: ByteBuffer(bytes: bytes))
            )
        }
        return routes
    }

    /// `GET /openapi.json`: the contract this server is tested against.
    @Sendable func openAPI(_ request: Request, context: Context) -> Response {
        Response(
            status: .ok,
            headers: [.contentType: "application/json; charset=utf-8"],
            body: .init(byteBuffer: ByteBuffer(bytes: OpenAPIDocument.bytes))
        )
    }

    /// `GET /ip-addresses`: where Keyway's outbound traffic comes from, for allow-lists.
    @Sendable func ipAddresses(_ request: Request, context: Context) -> EgressResponse {
        EgressResponse(egress: egressIPs)
    }
}

struct StatusResponse: ResponseEncodable {
    let status: String
}

struct EgressResponse: ResponseEncodable {
    let egress: [String]
}

enum OpenAPIDocument {
    /// Loaded once from the bundled `openapi.json`.
    static let bytes: [UInt8] = {
        guard let url = Bundle.module.url(forResource: "openapi", withExtension: "json"), let data = try? Data(contentsOf: url) else {
            preconditionFailure("openapi.json is missing from the KeywayHTTP bundle")
        }
        return Array(data)
    }()
}

/// One run of `check` at a time: callers that arrive while it runs wait for that run.
final class SharedCheck: Sendable {
    private let check: @Sendable () async throws -> Void
    private let running = Mutex<Task<Void, any Error>?>(nil)

    init(_ check: @escaping @Sendable () async throws -> Void) {
        self.check = check
    }

    /// Waits for the run in progress, or starts one. Cancelling a caller leaves the run going.
    func run() async throws {
        let task = running.withLock { current in
            if let current { return current }
            // The run clears itself when done; it needs the lock, so it cannot clear before
            // it is recorded here.
            let task = Task { [self] in
                defer { running.withLock { $0 = nil } }
                try await check()
            }
            current = task
            return task
        }
        try await task.value
    }
}
