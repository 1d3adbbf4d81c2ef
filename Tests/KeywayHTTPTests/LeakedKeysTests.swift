import Crypto
import Foundation
import HTTPTypes
import Hummingbird
import HummingbirdTesting
import KeywayCore
import Testing

@testable import KeywayHTTP

/// `POST /leaked-keys`: GitHub's secret-scanning partner payload in, GitHub's feedback out; a live
/// key reported is revoked at once.
@Suite struct LeakedKeysTests {
    static func body(_ items: [[String: String]]) -> String {
        String(decoding: try! JSONSerialization.data(withJSONObject: items), as: UTF8.self)
    }

    static func hexSHA256(_ text: String) -> String {
        SHA256.hash(data: Data(text.utf8)).map { String(format: "%02x", $0) }.joined()
    }

    static func feedback(_ response: JSONResponse) throws -> [[String: String]] {
        try #require(try JSONSerialization.jsonObject(with: Data(response.text.utf8)) as? [[String: String]])
    }

    @Test func liveKeysReportedAreRevokedAtOnceAndTheAnswerIsGitHubsFeedback() async throws {
        let server = try await TestServer.make()
        let development = server.key(server.acme, .development)
        let rolledOut = server.key(server.acme, .production)
        let production = EnvironmentID(accountID: server.acme.id, environment: .production)
        let current = try await server.keys.roll(for: production, grace: try KeyGrace(parsing: "24h"), createdBy: "t").key.revealPlaintext()
        let unknown = GeneratedSecretKey.generate(for: .development).revealPlaintext()
        let url = "https://github.com/octocat/Hello-World/blob/12345600b9cbe38a219f39a9941c9319b600c002/foo/bar.txt"
        let items = [
            ["token": development, "type": "keyway_api_key", "url": url, "source": "content"],
            ["token": rolledOut, "type": "keyway_api_key", "url": url, "source": "commit"],
            ["token": unknown, "type": "keyway_api_key", "url": url, "source": "content"],
            ["token": "kw_dev_notakey", "type": "keyway_api_key", "url": url, "source": "content"],
        ]
        try await server.test { client in
            #expect(try await client.call(.get, "/whoami", key: development).status == .ok)  // cached as active
            let response = try await client.call(.post, "/leaked-keys", json: Self.body(items))
            #expect(response.status == .ok)
            let answer = try Self.feedback(response)
            #expect(answer.map { $0["label"] } == ["true_positive", "true_positive", "false_positive", "false_positive"])
            #expect(answer.map { $0["token_hash"] } == items.map { Self.hexSHA256($0["token"]!) })
            #expect(answer.allSatisfy { $0["token_type"] == "keyway_api_key" && $0.count == 3 })
            #expect(!response.text.contains(server.acme.id.rawValue) && !response.text.contains("kw_"), "nothing else is revealed")

            for key in [development, rolledOut] {
                let refused = try await client.call(.get, "/whoami", key: key)
                #expect(refused.code == "revoked_api_key" && refused["revocationReason"] as? String == "leaked")
                #expect(refused.message?.contains("reported leaked") == true)
            }
            #expect(try await client.call(.get, "/whoami", key: current).status == .ok, "the rolled key's replacement is untouched")
            // Reported again: a real key still, but nothing more to revoke.
            let again = try Self.feedback(try await client.call(.post, "/leaked-keys", json: Self.body([items[0]])))
            #expect(again.map { $0["label"] } == ["true_positive"])
        }
        let leaks = try await server.store.auditEntries(for: server.acme.id, matching: AuditQuery(event: .keyReportedLeaked))
        #expect(leaks.count == 2)
        #expect(leaks.allSatisfy { $0.details["url"] == url && $0.details["revocationReason"] == "leaked" && $0.actor == "leak-report" })
        #expect(Set(leaks.compactMap { $0.details["source"] }) == ["content", "commit"])
    }

    /// The document allows `null` for everything but the token (a scanner may send it): it reads as absent.
    @Test func nullFieldsReadAsAbsent() async throws {
        let server = try await TestServer.make()
        let development = server.key(server.acme, .development)
        try await server.test { client in
            let response = try await client.call(
                .post,
                "/leaked-keys",
                json: #"[{"token":"\#(development)","type":null,"url":null,"source":null}]"#
            )
            #expect(response.status == .ok)
            #expect(try Self.feedback(response).map { $0["label"] } == ["true_positive"])
        }
        let leak = try #require(try await server.store.auditEntries(for: server.acme.id, matching: AuditQuery(event: .keyReportedLeaked)).first)
        #expect(leak.details["url"] == nil && leak.details["source"] == nil)
    }

    @Test func badReportsAreClearErrors() async throws {
        let server = try await TestServer.make()
        try await server.test { client in
            let object = try await client.call(.post, "/leaked-keys", json: #"{"token":"x"}"#)
            #expect(object.status == .badRequest)
            let noToken = try await client.call(.post, "/leaked-keys", json: #"[{"type":"keyway_api_key"}]"#)
            #expect(noToken.status == .badRequest)
            let tooMany = Self.body(Array(repeating: ["token": "x"], count: LeakedKeysController.maximumTokens + 1))
            let refused = try await client.call(.post, "/leaked-keys", json: tooMany)
            #expect(refused.status == .badRequest && refused.code == "invalid_input")
            let huge = "[" + Array(repeating: #"{"token":"x"}"#, count: 50_000).joined(separator: ",") + "]"
            let tooLarge = try await client.call(.post, "/leaked-keys", json: huge)
            #expect(tooLarge.status == .contentTooLarge && tooLarge.code == "body_too_large", "over the report's 512 KiB")
        }
    }

    /// Limited per client, not once for everyone: a client over the limit leaves another untouched.
    @Test func unsignedReportsAreRateLimitedPerClient() async throws {
        var configuration = TestServer.defaultConfiguration
        // Behind a trusted proxy each forwarded address is a client of its own.
        configuration.trustedProxies = try ServerConfiguration(environment: ["KEYWAY_TRUSTED_PROXIES": "127.0.0.1"]).trustedProxies
        let server = try await TestServer.make(configuration: configuration)
        try await server.test(.live) { client in
            func report(from address: String) async throws -> JSONResponse {
                try await client.call(.post, "/leaked-keys", json: "[]", headers: [xForwardedFor: address])
            }
            var statuses: [HTTPResponse.Status] = []
            for _ in 0..<(LeakedKeysController.unsignedPolicy.requestsPerSecond + 3) {
                let response = try await report(from: "198.51.100.1")
                statuses.append(response.status)
                if response.status == .tooManyRequests {
                    #expect(response.code == "rate_limited" && response.headers[.retryAfter] != nil)
                    #expect(
                        response.message?.hasPrefix("This address (or its IPv6 /64) sent more than 5 unsigned leak reports") == true,
                        "\(response.message ?? "")"
                    )
                }
            }
            #expect(statuses.contains(.tooManyRequests), "\(statuses)")
            #expect(try await report(from: "198.51.100.2").status == .ok, "another client is not limited")
        }
    }

    // MARK: Signed by GitHub

    static func signedServer() async throws -> (TestServer, P256.Signing.PrivateKey) {
        let signer = P256.Signing.PrivateKey()
        let file = try JSONSerialization.data(withJSONObject: [
            "public_keys": [["key_identifier": "test-key-1", "key": signer.publicKey.pemRepresentation, "is_current": true]]
        ])
        var configuration = TestServer.defaultConfiguration
        configuration.secretScanningKeys = try SecretScanningKeys(json: file, source: "test keys")
        return (try await TestServer.make(configuration: configuration), signer)
    }

    static func signed(_ body: String, by key: P256.Signing.PrivateKey, identifier: String = "test-key-1") throws -> HTTPFields {
        let signature = try key.signature(for: Data(body.utf8)).derRepresentation.base64EncodedString()
        return [HTTPField.Name("Github-Public-Key-Identifier")!: identifier, HTTPField.Name("Github-Public-Key-Signature")!: signature]
    }

    @Test func withGitHubsKeysOnlySignedReportsAreAccepted() async throws {
        let (server, signer) = try await Self.signedServer()
        let key = server.key(server.acme, .production)
        let body = Self.body([["token": key, "type": "keyway_api_key", "url": "https://github.com/a/b/blob/c/d", "source": "content"]])
        try await server.test { client in
            let refusals: [HTTPFields] = [
                [:],
                try Self.signed(body, by: P256.Signing.PrivateKey()),
                try Self.signed(body, by: signer, identifier: "another-key"),
                try Self.signed(body + " ", by: signer),
            ]
            for (index, headers) in refusals.enumerated() {
                let refused = try await client.call(.post, "/leaked-keys", json: body, headers: headers)
                #expect(refused.status == .unauthorized && refused.code == "invalid_report_signature", "\(index)")
            }
            // The last one signed another body: a signature covers the raw bytes exactly.
            #expect(try await client.call(.get, "/whoami", key: key).status == .ok, "no unsigned report revoked anything")

            let accepted = try await client.call(.post, "/leaked-keys", json: body, headers: try Self.signed(body, by: signer))
            #expect(accepted.status == .ok)
            #expect(try Self.feedback(accepted).map { $0["label"] } == ["true_positive"])
            #expect(try await client.call(.get, "/whoami", key: key).code == "revoked_api_key")
        }
        let leak = try #require(try await server.store.auditEntries(for: server.acme.id, matching: AuditQuery(event: .keyReportedLeaked)).first)
        #expect(leak.actor == "github-secret-scanning")
    }

    @Test func theAPIKeysPageShowsALeakedKeysRevocationWithItsSourceAndURL() async throws {
        try await withDashboard { server, browser in
            _ = try await browser.signUp()
            let generated = try await browser.post("/dashboard/settings/api-keys/development", ["current": "none"])
            let key = try #require(revealedKey(in: generated.html, environment: "development"))
            let url = "https://github.com/acme/app/blob/main/.env"
            _ = try await browser.client.call(
                .post,
                "/leaked-keys",
                json: Self.body([["token": key, "type": "keyway_api_key", "url": url, "source": "content"]])
            )
            let page = try await browser.get("/dashboard/settings/api-keys")
            let notice = try #require(page.html.range(of: #"<p class="leaked" role="alert" id="development-leaked">"#))
            let text = page.html[notice.upperBound...].prefix { $0 != "\n" }
            #expect(text.contains("kw_dev_…" + key.suffix(4)) && text.contains("(content)"))
            #expect(text.contains(#"<a href="\#(url)" rel="noreferrer noopener">"#))
            #expect(text.contains("generate a new key"))

            // A report's URL is linked only when it is a web address.
            let second = try await browser.post("/dashboard/settings/api-keys/development", ["current": "none"])
            let other = try #require(revealedKey(in: second.html, environment: "development"))
            _ = try await browser.client.call(
                .post,
                "/leaked-keys",
                json: Self.body([["token": other, "url": "javascript:alert(1)", "source": "content"]])
            )
            let later = try await browser.get("/dashboard/settings/api-keys")
            #expect(!later.html.contains(#"href="javascript:"#) && later.html.contains("at javascript:alert(1)"))
        }
    }

    private func withDashboard<Value: Sendable>(_ body: @Sendable (TestServer, TestBrowser) async throws -> Value) async throws -> Value {
        let server = try await TestServer.make(passwordHasher: CountingHasher())
        return try await server.test { client in try await body(server, TestBrowser(client)) }
    }
}
