import Foundation
import HTTPTypes
import Hummingbird
import HummingbirdTesting
import KeywayCore
import Testing

@testable import KeywayHTTP

/// Settings → Audit log, and the entries the dashboard's actions write.
@Suite struct AuditLogHTTPTests {
    private func withDashboard<Value: Sendable>(_ body: @Sendable (TestServer, TestBrowser) async throws -> Value) async throws -> Value {
        let server = try await TestServer.make(passwordHasher: CountingHasher())
        return try await server.test { client in try await body(server, TestBrowser(client)) }
    }

    private func account(of server: TestServer) async throws -> Account {
        try #require(try await server.store.accounts().first { ![server.acme.id, server.globex.id].contains($0.id) })
    }

    @Test func eachDashboardActionIsRecordedWithItsMemberBrowserAndRequest() async throws {
        try await withDashboard { server, browser in
            _ = try await browser.signUp(email: "owner@acme.test", password: "correct horse battery")
            let generated = try await browser.post("/dashboard/settings/api-keys/development", ["current": "none"])
            let key = try #require(revealedKey(in: generated.html, environment: "development"))
            _ = try await browser.post("/dashboard/settings/rate-limits/development", ["requestsPerSecond": "9"])
            _ = try await browser.post("/dashboard/signout", [:])
            _ = try await browser.get("/dashboard/signin")
            _ = try await browser.post("/dashboard/signin", ["email": "owner@acme.test", "password": "not the password!"])
            let signedIn = try await browser.post("/dashboard/signin", ["email": "owner@acme.test", "password": "correct horse battery"])
            #expect(signedIn.status == .seeOther)

            let account = try await account(of: server)
            let log = try await server.store.auditEntries(for: account.id, matching: AuditQuery(limit: 100))
            #expect(
                log.map(\.event).reversed() == [.signedUp, .signedIn, .keyGenerated, .rateLimitChanged, .signedOut, .signInFailed, .signedIn]
            )
            #expect(log.allSatisfy { $0.actor == "owner@acme.test" && $0.userAgent == TestBrowser.userAgent && $0.requestID != nil })
            let keyEntry = try #require(log.first { $0.event == .keyGenerated })
            #expect(keyEntry.hashedToken == KeyDigest(hashing: key.utf8).base64 && keyEntry.resourceHint == "kw_dev_…" + key.suffix(4))
            #expect(keyEntry.environment == .development)

            // The page shows them newest first, and never the key.
            let page = try await browser.get("/dashboard/settings/audit-log")
            #expect(page.status == .ok)
            #expect(page.html.contains(#"<a href="/dashboard/settings/audit-log" aria-current="page">Audit log</a>"#))
            let order = ["member.signed_in", "member.sign_in_failed", "member.signed_out", "rate_limit.changed", "key.generated", "member.signed_up"]
                .map { page.html.range(of: "<code>\($0)</code>")?.lowerBound }
            #expect(order.allSatisfy { $0 != nil } && zip(order, order.dropFirst()).allSatisfy { $0! < $1! }, "newest first")
            #expect(page.html.contains(keyEntry.hashedToken!), "searchable by the hash of a key one holds")
            #expect(!page.html.contains(key))
            let filtered = try await browser.get("/dashboard/settings/audit-log?event=key.generated&environment=development")
            #expect(filtered.html.contains("<code>key.generated</code>") && !filtered.html.contains("<code>member.signed_up</code>"))
            let none = try await browser.get("/dashboard/settings/audit-log?environment=production")
            #expect(none.html.contains(#"id="audit-empty""#))
            let bad = try await browser.get("/dashboard/settings/audit-log?event=nonsense")
            #expect(bad.status == .ok && bad.html.contains("is not an event"))
            // A page link no page ever made, at the edge of what the stores' arithmetic holds.
            for cursor in ["9223372036854775807_aud_x", "-9223372036854775808_aud_x", "253402300800000_aud_x", "12_notanid"] {
                let crafted = try await browser.get("/dashboard/settings/audit-log?before=\(cursor)")
                #expect(crafted.status == .ok && crafted.html.contains("is not a page of this log"), "\(cursor)")
            }
        }
    }

    /// The client address an entry records is the forwarded one only when the peer is a trusted
    /// proxy: from any other peer the header is the client's say-so, and the peer is recorded.
    @Test(arguments: [(true, "198.51.100.7"), (false, "127.0.0.1")])
    func theClientAddressRecordedIsForwardedOnlyByATrustedProxy(trustingTheProxy: Bool, recorded: String) async throws {
        var configuration = TestServer.defaultConfiguration
        if trustingTheProxy {
            configuration.trustedProxies = try ServerConfiguration(environment: ["KEYWAY_TRUSTED_PROXIES": "127.0.0.1"]).trustedProxies
        }
        let server = try await TestServer.make(configuration: configuration, passwordHasher: CountingHasher())
        let leaked = server.key(server.acme, .development)
        // `.live`: every request has a TCP peer, 127.0.0.1, the proxy when it is trusted.
        try await server.test(.live) { client in
            _ = try await TestBrowser(client).signUp(email: "owner@acme.test", password: "correct horse battery")
            let form = try await SignInForm(TestBrowser(client))
            let through: HTTPFields = [xForwardedFor: "198.51.100.7"]
            let signedIn = try await form.submit(email: "owner@acme.test", password: "correct horse battery", headers: through)
            #expect(signedIn.status == .seeOther)
            let report = try await client.call(.post, "/leaked-keys", json: LeakedKeysTests.body([["token": leaked]]), headers: through)
            #expect(report.status == .ok)
        }
        let account = try await account(of: server)
        let signIns = try await server.store.auditEntries(for: account.id, matching: AuditQuery(event: .signedIn))
        // The sign-up's sign-in sent no header: its peer, in both cases.
        #expect(signIns.compactMap(\.clientAddress).sorted() == ["127.0.0.1", recorded].sorted(), "\(signIns.map(\.clientAddress))")
        let leak = try #require(try await server.store.auditEntries(for: server.acme.id, matching: AuditQuery(event: .keyReportedLeaked)).first)
        #expect(leak.clientAddress == recorded)
    }

    @Test func theLogPagesAndShowsOnlyTheAccountsOwnEntries() async throws {
        try await withDashboard { server, browser in
            _ = try await browser.signUp()
            let account = try await account(of: server)
            let start = Date(timeIntervalSince1970: 1_800_000_000)
            for index in 0..<(2 * DashboardController.auditPageSize) {
                try await server.store.recordAudit(
                    AuditEntry(at: start.addingTimeInterval(TimeInterval(index)), accountID: account.id, event: .originsChanged, context: .cli)
                )
            }
            _ = try await server.keys.generate(for: EnvironmentID(accountID: server.acme.id, environment: .development), createdBy: "other")
            var ids: [String] = []
            var uri: String? = "/dashboard/settings/audit-log?event=origins.changed"
            while let next = uri {
                let page = try await browser.get(next)
                ids += page.html.components(separatedBy: #"<tr id=""#).dropFirst().map { String($0.prefix { $0 != "\"" }) }
                uri = page.html.range(of: #"" id="audit-older""#).map { end in
                    let start = page.html.range(of: #"<a href=""#, options: .backwards, range: page.html.startIndex..<end.lowerBound)!.upperBound
                    return String(page.html[start..<end.lowerBound]).replacingOccurrences(of: "&amp;", with: "&")
                }
            }
            #expect(ids.count == 2 * DashboardController.auditPageSize && Set(ids).count == ids.count, "every entry once across pages")
            let all = try await browser.get("/dashboard/settings/audit-log")
            #expect(!all.html.contains(server.acme.id.rawValue) && !all.html.contains("other"), "another account's entries are not shown")
        }
    }
}
