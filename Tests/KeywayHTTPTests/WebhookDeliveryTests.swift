import Crypto
import Foundation
import HTTPTypes
import HummingbirdTesting
import KeywayCore
import Logging
import NIOCore
import Testing

@testable import KeywayHTTP

/// Webhooks through the server: the dispatcher signs and posts what the API's changes enqueued,
/// records each answer, and the dashboard manages endpoints and shows deliveries.
@Suite struct WebhookDeliveryTests {
    /// Waits for `condition`; the deadline only keeps a broken build from hanging the suite.
    func waitUntil(sourceLocation: SourceLocation = #_sourceLocation, _ condition: () async throws -> Bool) async throws {
        let end = ContinuousClock.now + .seconds(20)
        while try await !condition() {
            guard ContinuousClock.now < end else {
                Issue.record("the condition did not hold within 20 s", sourceLocation: sourceLocation)
                return
            }
            try await Task.sleep(for: .milliseconds(20))
        }
    }

    @Test func aUserCreatedThroughTheAPIIsPostedSignedWithTheEndpointsSecret() async throws {
        let server = try await TestServer.make()
        let environment = EnvironmentID(accountID: server.acme.id, environment: .development)
        let (endpoint, secret) = try await server.webhooks.createEndpoint(
            in: environment,
            url: "https://hooks.example.com/keyway",
            events: [.userCreated],
            audit: .cli
        )
        try await server.test { client in
            let response = try await client.execute(
                uri: "/users",
                method: .post,
                headers: [.authorization: "Bearer \(server.key(server.acme, .development))", .contentType: "application/json"],
                body: ByteBuffer(string: #"{"username": "ada@example.com"}"#)
            )
            #expect(response.status == .ok)
            try await waitUntil { !server.webhookTransport.posts.isEmpty }
            try await waitUntil {
                try await server.store.webhookDeliveries(for: server.acme.id, endpoint: endpoint.id, limit: 10).first?.status == .succeeded
            }
        }
        let post = try #require(server.webhookTransport.posts.first)
        #expect(server.webhookTransport.posts.count == 1)
        #expect(post.url.absoluteString == "https://hooks.example.com/keyway")
        let id = try #require(post.headers["webhook-id"])
        let timestamp = try #require(post.headers["webhook-timestamp"].flatMap(Int64.init))
        #expect(abs(Double(timestamp) - Date().timeIntervalSince1970) < 60)
        let mac = HMAC<SHA256>.authenticationCode(for: Data("\(id).\(timestamp).\(post.body)".utf8), using: SymmetricKey(data: secret.bytes))
        #expect(post.headers["webhook-signature"] == "v1," + Data(mac).base64EncodedString())
        #expect(post.headers["content-type"] == "application/json")
        let body = try #require(JSONSerialization.jsonObject(with: Data(post.body.utf8)) as? [String: Any])
        #expect(body["type"] as? String == "user.created")
        #expect((body["data"] as? [String: Any])?["username"] as? String == "ada@example.com")
        let delivery = try #require(try await server.store.webhookDeliveries(for: server.acme.id, endpoint: nil, limit: 10).first)
        #expect(delivery.id == id, "webhook-id is the delivery's id: the same on every attempt")
        #expect(delivery.attempts == 1 && delivery.lastStatusCode == 204)
    }

    func dispatcher(_ server: TestServer) -> WebhookDispatcher {
        WebhookDispatcher(webhooks: server.webhooks, transport: server.webhookTransport, logger: Logger(label: "test"))
    }

    @Test func aFailedAttemptWaitsForItsRetryAndGoneDisablesTheEndpoint() async throws {
        let server = try await TestServer.make()
        let environment = EnvironmentID(accountID: server.acme.id, environment: .production)
        let (endpoint, _) = try await server.webhooks.createEndpoint(
            in: environment,
            url: "https://hooks.example.com/keyway",
            events: [.userCreated, .userDeleted],
            audit: .cli
        )
        let user = try await server.store.createUser(try NewUser(username: "ada", fullName: nil), in: environment, at: Date())
        server.webhookTransport.answer { attempt in attempt == 0 ? WebhookResponse(statusCode: 500) : WebhookResponse(statusCode: 410) }
        #expect(try await dispatcher(server).deliverOneBatch() == 1)
        var delivery = try #require(try await server.store.webhookDeliveries(for: server.acme.id, endpoint: endpoint.id, limit: 10).first)
        #expect(delivery.status == .pending && delivery.attempts == 1 && delivery.lastStatusCode == 500)
        let wait = try #require(delivery.nextAttemptAt).timeIntervalSince(try #require(delivery.lastAttemptAt))
        #expect((4.4...5.6).contains(wait), "the second attempt 5 s later, with jitter: \(wait)")
        #expect(try await dispatcher(server).deliverOneBatch() == 0, "not due yet")

        _ = try await server.store.deleteUser(user.id, in: environment)
        #expect(try await dispatcher(server).deliverOneBatch() == 1, "the new event is due at once")
        let disabled = try #require(try await server.store.webhookEndpoint(endpoint.id, in: server.acme.id))
        #expect(disabled.disabledReason?.contains("410") == true)
        delivery = try #require(try await server.store.webhookDeliveries(for: server.acme.id, endpoint: endpoint.id, limit: 10).last)
        #expect(delivery.status == .failed, "what waited for the endpoint fails with it")
    }

    @Test func aRefusedAddressIsAFailedAttemptNotAPost() async throws {
        let server = try await TestServer.make()
        let environment = EnvironmentID(accountID: server.acme.id, environment: .development)
        let (endpoint, _) = try await server.webhooks.createEndpoint(
            in: environment,
            url: "https://hooks.example.com/keyway",
            events: [.userCreated],
            audit: .cli
        )
        _ = try await server.store.createUser(try NewUser(username: "ada", fullName: nil), in: environment, at: Date())
        // The name now resolves to a private address (DNS rebinding): checked again before the post.
        let rebound = Webhooks(
            store: server.store,
            masterKey: try MasterKey(bytes: Array(repeating: UInt8(7), count: 32)),
            policy: WebhookURLPolicy(allowInsecure: false) { _ in [[10, 0, 0, 1]] }
        )
        let dispatcher = WebhookDispatcher(webhooks: rebound, transport: server.webhookTransport, logger: Logger(label: "test"))
        #expect(try await dispatcher.deliverOneBatch() == 1)
        #expect(server.webhookTransport.posts.isEmpty)
        let delivery = try #require(try await server.store.webhookDeliveries(for: server.acme.id, endpoint: endpoint.id, limit: 1).first)
        #expect(delivery.status == .pending && delivery.lastStatusCode == nil)
        #expect(delivery.lastError?.contains("public addresses only") == true, "\(delivery.lastError ?? "")")
        #expect(delivery.lastError?.contains("10.0.0.1") == false, "never what the name resolved to")
    }

    @Test func retryAfterIsReadAsSecondsOrAnHTTPDate() {
        let now = Date(timeIntervalSince1970: 1_800_000_000)
        #expect(HTTPClientWebhookTransport.retryAfter("120", now: now) == 120)
        let parsed = HTTPClientWebhookTransport.retryAfter("Fri, 15 Jan 2027 08:00:00 GMT", now: now.addingTimeInterval(-60))
        #expect(parsed == 60)
        #expect(HTTPClientWebhookTransport.retryAfter("soon", now: now) == nil)
        #expect(HTTPClientWebhookTransport.retryAfter("-5", now: now) == nil)
    }

    // MARK: Settings → Webhooks

    @Test func theDashboardAddsAnEndpointShowingItsSecretOnceAndListsDeliveries() async throws {
        let server = try await TestServer.make()
        try await server.test { client in
            let browser = TestBrowser(client)
            _ = try await browser.signUp()
            var page = try await browser.get("/dashboard/settings/webhooks")
            #expect(page.status == .ok && page.html.contains("aria-current=\"page\">Webhooks"))
            #expect(page.html.contains("203.0.113.10"), "the page says where deliveries come from")

            page = try await browser.post("/dashboard/settings/webhooks/development", ["url": "http://hooks.example.com/", "events": "user.created"])
            #expect(page.status == .badRequest && page.html.contains("must be https"))
            page = try await browser.post("/dashboard/settings/webhooks/development", ["url": "https://internal.test/", "events": "user.created"])
            #expect(page.status == .badRequest && page.html.contains("public addresses only"))

            page = try await browser.post(
                "/dashboard/settings/webhooks/development",
                ["url": "https://hooks.example.com/in", "events": "user.created"]
            )
            #expect(page.status == .ok)
            let secret = try #require(Self.secret(in: page.html))
            #expect(WebhookSecret(serialized: secret) != nil)
            page = try await browser.get("/dashboard/settings/webhooks")
            #expect(Self.secret(in: page.html) == nil, "shown once")
            #expect(page.html.contains("https://hooks.example.com/in"))

            // The signed-up account's user, created through the store as the API would: listed once delivered.
            let accountID = try #require(try await server.store.memberCredentials(email: "owner@acme.test")?.member.accountID)
            let endpoint = try #require(try await server.store.webhookEndpoints(for: accountID).first)
            #expect(endpoint.events == [.userCreated])
            _ = try await server.store.createUser(
                try NewUser(username: "ada", fullName: nil),
                in: EnvironmentID(accountID: accountID, environment: .development),
                at: Date()
            )
            try await waitUntil { try await server.store.webhookDeliveries(for: accountID, endpoint: nil, limit: 1).first?.status == .succeeded }
            page = try await browser.get("/dashboard/settings/webhooks")
            let delivery = try #require(try await server.store.webhookDeliveries(for: accountID, endpoint: nil, limit: 1).first)
            #expect(page.html.contains(delivery.id) && page.html.contains("HTTP 204") && page.html.contains("succeeded"))

            // Resend posts it again, with the same webhook-id.
            page = try await browser.post("/dashboard/settings/webhooks/deliveries/\(delivery.id)/resend", [:])
            #expect(page.status == .seeOther)
            try await waitUntil { server.webhookTransport.posts.count == 2 }
            #expect(Set(server.webhookTransport.posts.compactMap { $0.headers["webhook-id"] }) == [delivery.id])

            // Rotating shows the new secret once; both sign for a day.
            page = try await browser.get("/dashboard/settings/webhooks")
            let form = ["current": try #require(hiddenField("current", in: page.html))]
            page = try await browser.post("/dashboard/settings/webhooks/endpoints/\(endpoint.id)/rotate", form)
            let rotated = try #require(Self.secret(in: page.html))
            #expect(rotated != secret && page.html.contains("previous secret also signs"))
            // The same form again (a reload) rotates nothing: the secret receivers just got stays.
            page = try await browser.post("/dashboard/settings/webhooks/endpoints/\(endpoint.id)/rotate", form)
            #expect(page.status == .seeOther && page.location?.contains("notice=stale") == true)
            let stored = try #require(try await server.store.webhookEndpoint(endpoint.id, in: accountID))
            #expect(try server.webhooks.secrets(of: stored, at: Date()).map(\.serialized) == [rotated, secret])

            // Another account's endpoint is not found from here.
            let other = try await server.webhooks.createEndpoint(
                in: EnvironmentID(accountID: server.globex.id, environment: .development),
                url: "https://hooks.example.com/globex",
                events: [],
                audit: .cli
            ).0
            for action in ["rotate", "delete"] {
                try await browser.get("/dashboard/settings/webhooks")
                page = try await browser.post("/dashboard/settings/webhooks/endpoints/\(other.id)/\(action)", ["current": "none"])
                #expect(page.status == .notFound)
            }
            #expect(try await server.store.webhookEndpoint(other.id, in: server.globex.id) != nil)

            try await browser.get("/dashboard/settings/webhooks")
            page = try await browser.post("/dashboard/settings/webhooks/endpoints/\(endpoint.id)/state", ["enabled": "false"])
            #expect(page.status == .seeOther)
            page = try await browser.get("/dashboard/settings/webhooks")
            #expect(page.html.contains("\(endpoint.id)-disabled") && page.html.contains("Disabled by owner@acme.test."))
            page = try await browser.post("/dashboard/settings/webhooks/endpoints/\(endpoint.id)/delete", [:])
            #expect(page.status == .seeOther)
            #expect(try await server.store.webhookEndpoints(for: accountID).isEmpty)
        }
    }

    static func secret(in html: String) -> String? {
        guard let field = html.range(of: #"id="webhook-secret""#), let value = html[field.upperBound...].range(of: #"value=""#) else {
            return nil
        }
        return String(html[value.upperBound...].prefix { $0 != "\"" })
    }
}
