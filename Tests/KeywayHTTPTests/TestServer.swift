import Foundation
import HTTPTypes
import Hummingbird
import HummingbirdTesting
import KeywayCore
import KeywayHTTP
import KeywaySQLite
import Logging
import Metrics
import NIOCore
import Prometheus
import Synchronization
import Testing

typealias Environment = KeywayCore.Environment

/// swift-metrics can be bootstrapped once per process, so every test shares this registry.
let testMetricsRegistry: PrometheusCollectorRegistry = {
    let registry = PrometheusCollectorRegistry()
    MetricsSystem.bootstrap(PrometheusMetricsFactory(registry: registry))
    return registry
}()

/// A Keyway application on a fresh SQLite file, with two accounts and a key per environment.
struct TestServer {
    let store: any KeywayStore
    /// The SQLite file under `store`.
    let databasePath: String
    let keys: SecretKeys
    /// The service tokens `/keys/verify` accepts; create them through it, so the server knows at once.
    let serviceTokens: ServiceTokens
    var configuration: ServerConfiguration
    let logs: CapturedLogs
    let passwordHasher: any PasswordHasher
    let userTokens: UserTokens
    let clock: TestClock
    /// The rate limits the server applies, on ``rateClock``.
    let rateLimits: RateLimits
    let rateClock: NanosecondClock
    let acme: Account
    let globex: Account
    /// The current key of each (account, environment), kept in memory only for the test's life.
    let initialKeys: [EnvironmentID: String]
    /// Webhook endpoints; their URL guard resolves `hooks.example.com` to a public address.
    let webhooks: Webhooks
    /// What the server's dispatcher posts to, and how it answers.
    let webhookTransport: RecordingTransport

    /// - Parameter changeWatch: Whether the store tells the server about other processes'
    ///   commits at once; without it the server learns of revocations only by polling.
    static func make(
        configuration: ServerConfiguration = TestServer.defaultConfiguration,
        keyGenerationLimit: KeyGenerationLimit = TestServer.defaultKeyGenerationLimit,
        passwordHasher: any PasswordHasher = CountingHasher(),
        changeWatch: Bool = true,
        limitRequests: Bool = false
    ) async throws -> TestServer {
        let path = FileManager.default.temporaryDirectory
            .appendingPathComponent("keyway-http-tests-\(UUID().uuidString)").appendingPathComponent("keyway.sqlite").path
        let sqlite = try KeywaySQLiteStore(path: path, migrate: true)
        let store: any KeywayStore = changeWatch ? sqlite : StoreWithoutChangeWatch(sqlite)
        let logs = CapturedLogs()
        let clock = TestClock()
        let userTokens = UserTokens(
            store: store,
            masterKey: try MasterKey(bytes: Array(repeating: UInt8(7), count: 32)),
            issuer: "http://keyway.test",
            lifetime: 1800,
            now: { clock.now }
        )
        let keys = SecretKeys(store: store, generationLimit: keyGenerationLimit, logger: logs.logger(label: "keyway.keys"))
        let acme = try await store.createAccount(name: "Acme", at: Date())
        let globex = try await store.createAccount(name: "Globex", at: Date())
        var initialKeys: [EnvironmentID: String] = [:]
        for account in [acme, globex] {
            for environment in Environment.allCases {
                let id = EnvironmentID(accountID: account.id, environment: environment)
                initialKeys[id] = try await keys.generate(for: id, createdBy: "test").key.revealPlaintext()
            }
        }
        let rateClock = NanosecondClock()
        let rateLimits = RateLimits(store: store, now: { rateClock.now })
        if !limitRequests {
            // Tests send as fast as they can with one key: those about limits ask for them.
            for id in initialKeys.keys { try await rateLimits.set(.off, for: id, audit: .system) }
        }
        return TestServer(
            store: store,
            databasePath: path,
            keys: keys,
            serviceTokens: ServiceTokens(store: store, logger: logs.logger(label: "keyway.service-tokens")),
            configuration: configuration,
            logs: logs,
            passwordHasher: passwordHasher,
            userTokens: userTokens,
            clock: clock,
            rateLimits: rateLimits,
            rateClock: rateClock,
            acme: acme,
            globex: globex,
            initialKeys: initialKeys,
            webhooks: Webhooks(
                store: store,
                masterKey: try MasterKey(bytes: Array(repeating: UInt8(7), count: 32)),
                policy: WebhookURLPolicy(allowInsecure: false) { host in
                    guard host == "hooks.example.com" else { throw URLError(.cannotFindHost) }
                    return [[93, 184, 216, 34]]
                }
            ),
            webhookTransport: RecordingTransport()
        )
    }

    static var defaultConfiguration: ServerConfiguration {
        var configuration = ServerConfiguration()
        configuration.egressIPs = ["203.0.113.10", "2001:db8::1"]
        // The issuer of the tests' user tokens; without it a live server would name its port.
        configuration.publicURL = "http://keyway.test"
        return configuration
    }

    /// The executable's default: 20 generations per environment a minute.
    static let defaultKeyGenerationLimit = KeyGenerationLimit(count: 20, windowSeconds: 60)

    func key(_ account: Account, _ environment: Environment) -> String {
        initialKeys[EnvironmentID(accountID: account.id, environment: environment)]!
    }

    /// Runs `body` against the in-process router, or with `.live` against a server on
    /// loopback (a free port), where every request has a TCP peer: 127.0.0.1.
    func test<Value: Sendable>(
        _ setup: TestingSetup = .router,
        _ body: @Sendable (any TestClientProtocol) async throws -> Value
    ) async throws -> Value {
        var configuration = self.configuration
        configuration.port = 0
        let app = buildApplication(
            configuration: configuration,
            store: store,
            keys: keys,
            metrics: testMetricsRegistry,
            userTokens: userTokens,
            // SQLite: one instance per file, whose memory is the whole count.
            attemptLedger: nil,
            rateLimits: rateLimits,
            serviceTokens: serviceTokens,
            webhooks: webhooks,
            webhookTransport: webhookTransport,
            twoFactorSecrets: TwoFactorSecrets(masterKey: try MasterKey(bytes: Array(repeating: UInt8(7), count: 32))),
            passwordHasher: passwordHasher,
            now: { [clock] in clock.now },
            logger: logs.logger(label: "keyway")
        )
        return try await app.test(setup, body)
    }
}

/// A webhook receiver in memory: records every post and answers with ``answer``'s status.
final class RecordingTransport: WebhookTransport {
    struct Post: Sendable {
        let url: URL
        let headers: [String: String]
        let body: String
    }

    private let state = Mutex<(posts: [Post], answer: @Sendable (Int) -> WebhookResponse)>(([], { _ in WebhookResponse(statusCode: 204) }))

    var posts: [Post] { state.withLock { $0.posts } }

    /// How the receiver answers post number n (0 for the first).
    func answer(_ answer: @escaping @Sendable (Int) -> WebhookResponse) {
        state.withLock { $0.answer = answer }
    }

    func post(url: URL, headers: [(String, String)], body: String, timeout: TimeInterval) async throws -> WebhookResponse {
        state.withLock { state in
            state.posts.append(Post(url: url, headers: Dictionary(headers, uniquingKeysWith: { first, _ in first }), body: body))
            return state.answer(state.posts.count - 1)
        }
    }
}

/// Monotonic nanoseconds moved by hand, for the rate limiter.
final class NanosecondClock: Sendable {
    private let nanoseconds = Mutex<UInt64>(1_000_000_000_000)
    var now: UInt64 { nanoseconds.withLock { $0 } }
    func advance(milliseconds: UInt64) { nanoseconds.withLock { $0 += milliseconds * 1_000_000 } }
}

/// Checked origins from literals.
func origins(_ list: String...) throws -> [BrowserOrigin] {
    try list.map(BrowserOrigin.init)
}

/// A decoded JSON response.
struct JSONResponse: Sendable {
    let status: HTTPResponse.Status
    let headers: HTTPFields
    let text: String

    var object: [String: any Sendable] {
        (try? JSONSerialization.jsonObject(with: Data(text.utf8)) as? [String: any Sendable]) ?? [:]
    }
    var code: String? { object["code"] as? String }
    var message: String? { object["message"] as? String }
    subscript(_ key: String) -> (any Sendable)? { object[key] }
}

extension TestClientProtocol {
    /// Sends a request with an optional key and JSON body.
    func call(
        _ method: HTTPRequest.Method,
        _ uri: String,
        key: String? = nil,
        json: String? = nil,
        headers extra: HTTPFields = [:]
    ) async throws -> JSONResponse {
        var headers = extra
        if let key { headers[.authorization] = "Bearer \(key)" }
        if json != nil { headers[.contentType] = "application/json" }
        return try await execute(uri: uri, method: method, headers: headers, body: json.map { ByteBuffer(string: $0) }) { response in
            JSONResponse(status: response.status, headers: response.headers, text: String(buffer: response.body))
        }
    }

    /// Creates a user and returns its id.
    func createUser(_ username: String, key: String, fullName: String? = nil) async throws -> String {
        let body = try String(
            decoding: JSONSerialization.data(withJSONObject: ["username": username, "fullName": fullName as Any? ?? NSNull()]),
            as: UTF8.self
        )
        let response = try await call(.post, "/users", key: key, json: body)
        try #require(response.status == .ok, "creating \(username): \(response.text)")
        return try #require(response["userId"] as? String)
    }
}

/// A clock tests move by hand, so expiry is tested without sleeping.
final class TestClock: Sendable {
    private let current = Mutex(Date())
    var now: Date { current.withLock { $0 } }
    func advance(by seconds: TimeInterval) { current.withLock { $0 = $0.addingTimeInterval(seconds) } }
}

/// Keeps every log line (message and metadata) so tests can check what reaches the logs.
final class CapturedLogs: Sendable {
    private let lines = Mutex<[String]>([])

    var all: [String] { lines.withLock { $0 } }

    func logger(label: String) -> Logger {
        var logger = Logger(label: label) { _ in Handler(sink: self) }
        logger.logLevel = .trace
        return logger
    }

    fileprivate func append(_ line: String) { lines.withLock { $0.append(line) } }

    private struct Handler: LogHandler {
        let sink: CapturedLogs
        var metadata: Logger.Metadata = [:]
        var logLevel: Logger.Level = .trace

        subscript(metadataKey key: String) -> Logger.Metadata.Value? {
            get { metadata[key] }
            set { metadata[key] = newValue }
        }

        func log(
            level: Logger.Level,
            message: Logger.Message,
            metadata explicit: Logger.Metadata?,
            source: String,
            file: String,
            function: String,
            line: UInt
        ) {
            let merged = metadata.merging(explicit ?? [:]) { $1 }
            sink.append("\(level) \(message) \(merged)")
        }
    }
}
