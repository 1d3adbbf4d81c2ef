import Foundation
import HTTPTypes
import Hummingbird
import HummingbirdTesting
import KeywayCore
import Testing

@testable import KeywayHTTP

/// A rolled key in its grace period, as every surface shows it: `Keyway-Key-Expires` on each
/// response to it, `expiresAt` from `/whoami` and `/keys/verify`, and the dashboard's Roll….
@Suite struct KeyRollHTTPTests {
    private static let expires = HTTPField.Name("Keyway-Key-Expires")!

    @Test func everyResponseToAKeyInGraceSaysWhenItStops() async throws {
        let server = try await TestServer.make()
        let environment = EnvironmentID(accountID: server.acme.id, environment: .production)
        let old = server.key(server.acme, .production)
        let rolledAt = Date().keywayPrecision
        let new = try await server.keys.roll(for: environment, grace: try KeyGrace(parsing: "24h"), createdBy: "test", at: rolledAt)
            .key.revealPlaintext()
        let end = KeywayJSON.timestamp(rolledAt.addingTimeInterval(86_400))
        #expect(end.hasSuffix(".000Z") || end.hasSuffix("Z"))
        let token = try await server.serviceTokens.create(name: "gateway").token.revealPlaintext()
        try await server.test { client in
            let whoami = try await client.call(.get, "/whoami", key: old)
            #expect(whoami.status == .ok)
            #expect(whoami.headers[Self.expires] == end)
            #expect(whoami["expiresAt"] as? String == end)
            // Errors too: the owner's logs show the deadline whatever the request.
            let missing = try await client.call(.get, "/users/nobody", key: old)
            #expect(missing.status == .notFound && missing.headers[Self.expires] == end)
            let versioned = try await client.call(.get, "/2024-03/whoami", key: old)
            #expect(versioned.headers[Self.expires] == end)
            let auth = try await client.call(.get, "/auth", key: old)
            #expect(auth.status == .ok && auth.headers[Self.expires] == end)
            let verified = try await client.call(.post, "/keys/verify", key: token, json: KeyVerificationTests.body(old))
            #expect(verified["valid"] as? Bool == true && verified["expiresAt"] as? String == end)

            // The new key is the current one: no deadline anywhere.
            let current = try await client.call(.get, "/whoami", key: new)
            #expect(current.status == .ok && current.headers[Self.expires] == nil && current["expiresAt"] == nil)
            #expect(try await client.call(.get, "/auth", key: new).headers[Self.expires] == nil)
            let verifiedNew = try await client.call(.post, "/keys/verify", key: token, json: KeyVerificationTests.body(new))
            #expect(verifiedNew["valid"] as? Bool == true && verifiedNew["expiresAt"] == nil)
        }
    }

    @Test func aKeyOverItsLimitInGraceSaysWhenItStopsToo() async throws {
        let server = try await TestServer.make()
        let environment = EnvironmentID(accountID: server.acme.id, environment: .development)
        try await server.rateLimits.set(.requestsPerSecond(1), for: environment, audit: .system)
        let old = server.key(server.acme, .development)
        _ = try await server.keys.roll(for: environment, grace: try KeyGrace(parsing: "1h"), createdBy: "test")
        try await server.test { client in
            var statuses: [HTTPResponse.Status] = []
            for _ in 0..<3 {
                let response = try await client.call(.get, "/whoami", key: old)
                statuses.append(response.status)
                #expect(response.headers[Self.expires] != nil, "\(response.status)")
            }
            #expect(statuses.contains(.tooManyRequests))
        }
    }

    @Test func afterTheGraceTheOldKeyIsRefusedEverywhereAndTheNewOneWorks() async throws {
        let server = try await TestServer.make()
        let environment = EnvironmentID(accountID: server.acme.id, environment: .development)
        let old = server.key(server.acme, .development)
        let rolledAt = Date()
        let new = try await server.keys.roll(for: environment, grace: try KeyGrace(seconds: 2), createdBy: "test", at: rolledAt)
            .key.revealPlaintext()
        let end = rolledAt.addingTimeInterval(2)
        let token = try await server.serviceTokens.create(name: "gateway").token.revealPlaintext()
        try await server.test { client in
            let during = try await client.call(.get, "/whoami", key: old).status
            // On a machine busy with the other suites the call may come after the grace already.
            if Date() < end { #expect(during == .ok) }
            try await Task.sleep(for: .milliseconds(max(0, Int(end.timeIntervalSinceNow * 1000)) + 100))
            let refused = try await client.call(.get, "/whoami", key: old)
            #expect(refused.status == .unauthorized && refused.code == "revoked_api_key")
            #expect(refused["revocationReason"] as? String == "expired_after_roll")
            #expect(refused.headers[Self.expires] == nil)
            #expect(try await client.call(.get, "/auth", key: old).status == .unauthorized)
            let verified = try await client.call(.post, "/keys/verify", key: token, json: KeyVerificationTests.body(old))
            #expect(verified["valid"] as? Bool == false && verified["revocationReason"] as? String == "expired_after_roll")
            #expect(try await client.call(.get, "/whoami", key: new).status == .ok)
        }
    }

    // MARK: Dashboard

    private func withDashboard<Value: Sendable>(_ body: @Sendable (TestServer, TestBrowser) async throws -> Value) async throws -> Value {
        let server = try await TestServer.make(passwordHasher: CountingHasher())
        return try await server.test { client in try await body(server, TestBrowser(client)) }
    }

    @Test func rollingFromTheDashboardShowsTheNewKeyOnceAndTheOldKeysGrace() async throws {
        try await withDashboard { server, browser in
            _ = try await browser.signUp()
            let none = try await browser.get("/dashboard/settings/api-keys")
            #expect(!none.html.contains(#"id="development-roll""#), "nothing to roll before a key exists")
            let first = try await browser.post("/dashboard/settings/api-keys/development", ["current": "none"])
            let oldKey = try #require(revealedKey(in: first.html, environment: "development"))
            _ = try await browser.client.call(.get, "/whoami", key: oldKey)

            let page = try await browser.get("/dashboard/settings/api-keys")
            #expect(page.html.contains(#"href="/dashboard/settings/api-keys?roll=development#development-card""#))
            let form = try await browser.get("/dashboard/settings/api-keys?roll=development")
            for value in ["now", "1h", "1d", "7d", "custom"] {
                #expect(form.html.contains(#"name="grace" value="\#(value)""#), "\(value)")
            }
            #expect(form.html.contains(#"value="1d" id="development-grace-1d" checked"#), "24 hours is the default")
            let current = try #require(hiddenField("current", in: form.html))

            let rolled = try await browser.post("/dashboard/settings/api-keys/development/roll", ["current": current, "grace": "1h"])
            #expect(rolled.status == .ok)
            let newKey = try #require(revealedKey(in: rolled.html, environment: "development"))
            #expect(newKey != oldKey)
            #expect(rolled.html.contains(#"id="development-grace""#))
            #expect(rolled.html.contains("kw_dev_…" + oldKey.suffix(4)))
            #expect(rolled.html.contains(#"id="development-grace-remaining">1 h 0 min<"#) || rolled.html.contains(">59 min"))
            let oldAnswer = try await browser.client.call(.get, "/whoami", key: oldKey)
            #expect(oldAnswer.status == .ok && oldAnswer["expiresAt"] is String)
            #expect(try await browser.client.call(.get, "/whoami", key: newKey).status == .ok)
            // Its last use shows once recorded, so the owner sees when traffic has moved.
            try await server.keys.flushUsage()
            let later = try await browser.get("/dashboard/settings/api-keys")
            let oldRecord = try #require(try await server.store.secretKey(digest: KeyDigest(hashing: oldKey.utf8)))
            let lastUsedAt = try #require(oldRecord.lastUsedAt, "the old key's use during its grace was written")
            #expect(later.html.contains(#"id="development-grace-last-used">\#(DashboardPages.display(lastUsedAt))<"#))
            #expect(revealedKey(in: later.html, environment: "development") == nil, "shown once")
        }
    }

    @Test func aCustomGraceIsCheckedAndABadOneChangesNothing() async throws {
        try await withDashboard { server, browser in
            _ = try await browser.signUp()
            let first = try await browser.post("/dashboard/settings/api-keys/development", ["current": "none"])
            let oldKey = try #require(revealedKey(in: first.html, environment: "development"))
            let current = try #require(hiddenField("current", in: try await browser.get("/dashboard/settings/api-keys").html))
            for bad in ["8d", "soon", ""] {
                let refused = try await browser.post(
                    "/dashboard/settings/api-keys/development/roll",
                    ["current": current, "grace": "custom", "customGrace": bad]
                )
                #expect(refused.status == .badRequest, "\(bad)")
                #expect(refused.html.contains(#"id="development-roll-error""#))
                #expect(revealedKey(in: refused.html, environment: "development") == nil)
            }
            #expect(try await browser.client.call(.get, "/whoami", key: oldKey)["expiresAt"] == nil, "not rolled")
            let rolled = try await browser.post(
                "/dashboard/settings/api-keys/development/roll",
                ["current": current, "grace": "custom", "customGrace": "90m"]
            )
            #expect(revealedKey(in: rolled.html, environment: "development") != nil)
            let answer = try await browser.client.call(.get, "/whoami", key: oldKey)
            let expiresAt = try #require(answer["expiresAt"] as? String)
            let formatter = ISO8601DateFormatter()
            formatter.formatOptions = [.withInternetDateTime, .withFractionalSeconds]
            let end = try #require(formatter.date(from: expiresAt))
            #expect(abs(end.timeIntervalSinceNow - 5400) < 60)
            // The same page submitted again (a reload) rolls nothing more.
            let again = try await browser.post("/dashboard/settings/api-keys/development/roll", ["current": current, "grace": "1h"])
            #expect(again.location == "/dashboard/settings/api-keys?notice=stale")
            _ = server
        }
    }

    @Test func rollingTheProductionKeyNeedsThePasswordAgain() async throws {
        try await withDashboard { server, browser in
            _ = try await browser.signUp(password: "my password is long")
            let first = try await browser.post(
                "/dashboard/settings/api-keys/production",
                ["current": "none", "confirm": "yes", "password": "my password is long"]
            )
            let oldKey = try #require(revealedKey(in: first.html, environment: "production"))
            let form = try await browser.get("/dashboard/settings/api-keys?roll=production")
            #expect(form.html.contains(#"id="production-password""#))
            let rollForm = try #require(form.html.range(of: #"action="/dashboard/settings/api-keys/production/roll""#))
            let current = try #require(hiddenField("current", in: String(form.html[rollForm.upperBound...])))
            let wrong = try await browser.post(
                "/dashboard/settings/api-keys/production/roll",
                ["current": current, "grace": "now", "password": "not it at all"]
            )
            #expect(wrong.status == .badRequest && wrong.html.contains(#"id="production-password-error""#))
            #expect(try await browser.client.call(.get, "/whoami", key: oldKey).status == .ok, "not rolled")
            let right = try await browser.post(
                "/dashboard/settings/api-keys/production/roll",
                ["current": current, "grace": "now", "password": "my password is long"]
            )
            #expect(revealedKey(in: right.html, environment: "production") != nil)
            // "Now": the old key stops at once, as rolled.
            let refused = try await browser.client.call(.get, "/whoami", key: oldKey)
            #expect(refused.code == "revoked_api_key" && refused["revocationReason"] as? String == "expired_after_roll")
            _ = server
        }
    }
}
