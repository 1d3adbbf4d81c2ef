import Foundation
import HTTPTypes
import HummingbirdTesting
import KeywayCore
import Testing

/// Rate limits per key on every key-authenticated request: the IETF fields, the 429, and settings.
@Suite struct RateLimitTests {
    func environmentID(_ server: TestServer, _ account: Account, _ environment: Environment) -> EnvironmentID {
        EnvironmentID(accountID: account.id, environment: environment)
    }

    @Test func successesCarryThePolicyAndWhatRemains() async throws {
        let server = try await TestServer.make(limitRequests: true)
        try await server.rateLimits.set(.requestsPerSecond(5), for: environmentID(server, server.acme, .development), audit: .system)
        try await server.test { client in
            let key = server.key(server.acme, .development)
            for remaining in [4, 3, 2] {
                let response = try await client.call(.get, "/whoami", key: key)
                #expect(response.status == .ok)
                #expect(response.headers[.rateLimitPolicy] == #""default";q=5;w=1"#)
                #expect(response.headers[.rateLimit] == #""default";r=\#(remaining);t=1"#)
                #expect(response.headers[.retryAfter] == nil)
            }
            // Errors after authentication count and say so too.
            let missing = try await client.call(.get, "/users/nobody", key: key)
            #expect(missing.status == .notFound)
            #expect(missing.headers[.rateLimit] == #""default";r=1;t=1"#)
            // So do errors that are not Keyway's own: a body over the limit is Hummingbird's 413.
            let tooLarge = try await client.call(.post, "/users", key: key, json: String(repeating: " ", count: 5 * 1024 * 1024))
            #expect(tooLarge.status == .contentTooLarge)
            #expect(tooLarge.headers[.rateLimit] == #""default";r=0;t=1"#)
        }
    }

    @Test func overTheLimitIs429WithRetryAfterTheProblemAndTheFields() async throws {
        let server = try await TestServer.make(limitRequests: true)
        try await server.rateLimits.set(.requestsPerSecond(3), for: environmentID(server, server.acme, .production), audit: .system)
        try await server.test { client in
            let key = server.key(server.acme, .production)
            for _ in 0..<3 { #expect(try await client.call(.get, "/users", key: key).status == .ok) }
            let users = try await server.store.users(in: environmentID(server, server.acme, .production), after: nil, limit: 10)
            let refused = try await client.call(.post, "/users", key: key, json: #"{"username": "over@acme.test"}"#)
            #expect(refused.status == .tooManyRequests)
            #expect(refused.headers[.retryAfter] == "1")
            #expect(refused.headers[.contentType] == "application/problem+json")
            #expect(refused.headers[.rateLimitPolicy] == #""default";q=3;w=1"#)
            #expect(refused.headers[.rateLimit] == #""default";r=0;t=1"#, "t never names a time before Retry-After")
            #expect(refused.code == "rate_limited")
            #expect(refused.message?.contains("3 requests") == true)
            #expect(refused["type"] as? String == "https://iana.org/assignments/http-problem-types#quota-exceeded")
            #expect(refused["title"] as? String == "Request cannot be satisfied as assigned quota has been exceeded")
            #expect(refused["status"] as? Int == 429)
            #expect(refused["violated-policies"] as? [String] == ["default"])
            #expect(refused["requestId"] as? String != nil)
            #expect(
                try await server.store.users(in: environmentID(server, server.acme, .production), after: nil, limit: 10).users.count
                    == users.users.count,
                "a refused request reaches no handler"
            )
            // A second later the window has slid.
            server.rateClock.advance(milliseconds: 1000)
            #expect(try await client.call(.get, "/whoami", key: key).status == .tooManyRequests, "the previous second still weighs")
            server.rateClock.advance(milliseconds: 400)
            #expect(try await client.call(.get, "/whoami", key: key).status == .ok)
        }
    }

    @Test func keysAndEnvironmentsAreLimitedApart() async throws {
        let server = try await TestServer.make(limitRequests: true)
        for account in [server.acme, server.globex] {
            for environment in Environment.allCases {
                try await server.rateLimits.set(.requestsPerSecond(2), for: environmentID(server, account, environment), audit: .system)
            }
        }
        try await server.test { client in
            let limited = server.key(server.acme, .development)
            for _ in 0..<2 { #expect(try await client.call(.get, "/whoami", key: limited).status == .ok) }
            #expect(try await client.call(.get, "/whoami", key: limited).status == .tooManyRequests)
            for (account, environment) in [(server.acme, Environment.production), (server.globex, .development), (server.globex, .production)] {
                let response = try await client.call(.get, "/whoami", key: server.key(account, environment))
                #expect(response.status == .ok)
                #expect(response.headers[.rateLimit] == #""default";r=1;t=1"#)
            }
        }
    }

    /// The count belongs to the environment's key, not to one key id: regenerating the key is no
    /// way around the limit (and a key in a grace period will share its successor's count).
    @Test func aRegeneratedKeyGoesOnWithItsPredecessorsCount() async throws {
        let server = try await TestServer.make(limitRequests: true)
        let development = environmentID(server, server.acme, .development)
        try await server.rateLimits.set(.requestsPerSecond(3), for: development, audit: .system)
        try await server.test { client in
            for _ in 0..<3 { #expect(try await client.call(.get, "/whoami", key: server.key(server.acme, .development)).status == .ok) }
            let regenerated = try await server.keys.generate(for: development, createdBy: "test").key.revealPlaintext()
            let response = try await client.call(.get, "/whoami", key: regenerated)
            #expect(response.status == .tooManyRequests, "the new key started a count of its own")
        }
    }

    @Test func offMeansNoLimitAndNoFields() async throws {
        let server = try await TestServer.make(limitRequests: true)
        try await server.rateLimits.set(.off, for: environmentID(server, server.acme, .development), audit: .system)
        try await server.test { client in
            for _ in 0..<200 {
                let response = try await client.call(.get, "/whoami", key: server.key(server.acme, .development))
                #expect(response.status == .ok)
                #expect(response.headers[.rateLimit] == nil)
                #expect(response.headers[.rateLimitPolicy] == nil)
            }
        }
    }

    @Test func theDefaultsAre25InDevelopmentAnd100InProduction() async throws {
        let server = try await TestServer.make(limitRequests: true)
        try await server.test { client in
            for (environment, limit) in [(Environment.development, 25), (.production, 100)] {
                let key = server.key(server.acme, environment)
                let first = try await client.call(.get, "/whoami", key: key)
                #expect(first.headers[.rateLimitPolicy] == #""default";q=\#(limit);w=1"#)
                for _ in 1..<limit { #expect(try await client.call(.get, "/whoami", key: key).status == .ok) }
                #expect(try await client.call(.get, "/whoami", key: key).status == .tooManyRequests)
            }
        }
    }

    @Test func aChangeTakesEffectAtOnce() async throws {
        let server = try await TestServer.make(limitRequests: true)
        let development = environmentID(server, server.acme, .development)
        try await server.rateLimits.set(.requestsPerSecond(1), for: development, audit: .system)
        try await server.test { client in
            let key = server.key(server.acme, .development)
            #expect(try await client.call(.get, "/whoami", key: key).status == .ok)
            #expect(try await client.call(.get, "/whoami", key: key).status == .tooManyRequests)
            try await server.rateLimits.set(.requestsPerSecond(10), for: development, audit: .system)
            let raised = try await client.call(.get, "/whoami", key: key)
            #expect(raised.status == .ok)
            #expect(raised.headers[.rateLimitPolicy] == #""default";q=10;w=1"#)
            // Set by another process (the CLI): read at the next refresh.
            try await server.store.setRateLimit(.off, for: development, audit: .system)
            try await server.rateLimits.refresh()
            #expect(try await client.call(.get, "/whoami", key: key).headers[.rateLimit] == nil)
        }
    }

    @Test func refusalsAreCountedByEnvironment() async throws {
        let server = try await TestServer.make(limitRequests: true)
        try await server.rateLimits.set(.requestsPerSecond(1), for: environmentID(server, server.acme, .production), audit: .system)
        try await server.test { client in
            // The registry is shared by every suite running at once, so counts can only be compared as at least.
            func count() async throws -> Double {
                let text = try await client.call(.get, "/metrics").text
                let line = text.split(separator: "\n").first { $0.hasPrefix(#"keyway_rate_limited_total{environment="production"}"#) }
                return line.flatMap { Double($0.split(separator: " ").last ?? "") } ?? 0
            }
            let before = try await count()
            let key = server.key(server.acme, .production)
            for _ in 0..<4 { _ = try await client.call(.get, "/whoami", key: key) }
            #expect(try await count() >= before + 3)
        }
    }

    @Test func theDashboardShowsAndChangesEachEnvironmentsLimit() async throws {
        let server = try await TestServer.make(limitRequests: true)
        try await server.test { client in
            let browser = TestBrowser(client)
            _ = try await browser.signUp()
            let page = try await browser.get("/dashboard/settings/rate-limits")
            #expect(page.html.contains(#"<strong id="production-limit">100 requests a second (the default)</strong>"#))
            #expect(page.html.contains(#"<strong id="development-limit">25 requests a second (the default)</strong>"#))
            // Accounts made in one second are ordered by their random ids: find the new one by id.
            let account = try #require(try await server.store.accounts().first { ![server.acme.id, server.globex.id].contains($0.id) })
            let set = try await browser.post("/dashboard/settings/rate-limits/production", ["requestsPerSecond": "40"])
            #expect(set.status == .seeOther)
            #expect(server.rateLimits.setting(for: environmentID(server, account, .production)) == .requestsPerSecond(40))
            let shown = try await browser.get("/dashboard/settings/rate-limits")
            #expect(shown.html.contains(#"<strong id="production-limit">40 requests a second</strong>"#))
            let keysPage = try await browser.get("/dashboard/settings/api-keys")
            #expect(keysPage.html.contains(#"<strong id="production-limit">40 requests a second</strong>"#), "shown beside the key too")
            let off = try await browser.post("/dashboard/settings/rate-limits/development", ["requestsPerSecond": "none"])
            #expect(off.status == .seeOther)
            #expect(try await server.store.rateLimits()[environmentID(server, account, .development)] == .off)
            let bad = try await browser.post("/dashboard/settings/rate-limits/development", ["requestsPerSecond": "-3"])
            #expect(bad.status == .badRequest)
            #expect(bad.html.contains("whole number of requests"))
            let forged = try await browser.post("/dashboard/settings/rate-limits/development", ["requestsPerSecond": "5"], csrf: "forged")
            #expect(forged.status != .seeOther)
            #expect(server.rateLimits.setting(for: environmentID(server, account, .development)) == .off)
        }
    }
}

extension HTTPField.Name {
    static let rateLimit = HTTPField.Name("RateLimit")!
    static let rateLimitPolicy = HTTPField.Name("RateLimit-Policy")!
}
