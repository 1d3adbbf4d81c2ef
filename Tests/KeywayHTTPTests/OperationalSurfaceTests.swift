import Foundation
import HTTPTypes
import HummingbirdTesting
import KeywayCore
import KeywayHTTP
import Testing

/// `/metrics` protection and the key-generation limit as clients see them.
@Suite struct OperationalSurfaceTests {
    static let metricsToken = "metrics-token-0123456789abcdef"

    @Test func metricsNeedTheTokenWhenOneIsConfigured() async throws {
        var configuration = TestServer.defaultConfiguration
        configuration.metricsToken = Self.metricsToken
        let server = try await TestServer.make(configuration: configuration)
        try await server.test { client in
            for authorization in [nil, "Bearer wrong-token-0123456789abcdef", "Basic \(Self.metricsToken)", Self.metricsToken] {
                var headers: HTTPFields = [:]
                if let authorization { headers[.authorization] = authorization }
                let refused = try await client.call(.get, "/metrics", headers: headers)
                #expect(refused.status == .unauthorized, "\(authorization ?? "no header")")
                #expect(refused.code == "metrics_token_required")
                #expect(refused.headers[.wwwAuthenticate] == #"Bearer realm="keyway-metrics""#)
                #expect(!refused.text.contains(Self.metricsToken))
            }
            let allowed = try await client.call(.get, "/metrics", headers: [.authorization: "bearer \(Self.metricsToken)"])
            #expect(allowed.status == .ok)
            #expect(allowed.headers[.contentType]?.hasPrefix("text/plain") == true)
        }
        #expect(!server.logs.all.joined().contains(Self.metricsToken))
    }

    @Test func metricsAreOpenWithoutAToken() async throws {
        let server = try await TestServer.make()
        let status = try await server.test { client in try await client.call(.get, "/metrics").status }
        #expect(status == .ok)
    }

    @Test func metricsOnTheirOwnListenerAreNotServedOnTheMainOne() async throws {
        var configuration = TestServer.defaultConfiguration
        configuration.metricsAddress = ListenAddress(host: "127.0.0.1", port: 0)
        let server = try await TestServer.make(configuration: configuration)
        try await server.test { client in
            let response = try await client.call(.get, "/metrics")
            #expect(response.status == .notFound)
            #expect(try await client.call(.get, "/healthz").status == .ok)
        }
    }

    @Test func generatingPastTheLimitIsA429OnTheDashboardAndGeneratesNothing() async throws {
        let server = try await TestServer.make(keyGenerationLimit: KeyGenerationLimit(count: 2, windowSeconds: 60))
        try await server.test { client in
            let browser = TestBrowser(client)
            _ = try await browser.signUp()
            _ = try await browser.post("/dashboard/settings/api-keys/development", ["current": "none"])
            func regenerate() async throws -> TestBrowser.Page {
                let page = try await browser.get("/dashboard/settings/api-keys")
                let current = try #require(hiddenField("current", in: page.html))
                return try await browser.post("/dashboard/settings/api-keys/development", ["current": current, "confirm": "yes"])
            }
            let second = try await regenerate()
            let key = try #require(revealedKey(in: second.html, environment: "development"))

            let refused = try await regenerate()
            #expect(refused.status == .tooManyRequests)
            #expect(refused.html.contains("Try again in"), "the page says when")
            let retryAfter = try #require(refused.headers[.retryAfter].flatMap { Int($0) })
            #expect((1...60).contains(retryAfter))
            #expect(revealedKey(in: refused.html, environment: "development") == nil)
            #expect(try await client.call(.get, "/whoami", key: key).status == .ok, "the previous key still works")

            let production = try await browser.post(
                "/dashboard/settings/api-keys/production",
                ["current": "none", "confirm": "yes", "password": "correct horse battery"]
            )
            #expect(revealedKey(in: production.html, environment: "production") != nil, "the limit is per environment")
        }
    }
}
