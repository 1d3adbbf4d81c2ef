import Foundation
import HTTPTypes
import Hummingbird
import HummingbirdTesting
import KeywayCore
import Testing

/// `POST /keys/verify`: the operator's services ask about a key with a service token.
@Suite struct KeyVerificationTests {
    /// A server with one service token, and that token.
    static func serverWithToken() async throws -> (TestServer, String) {
        let server = try await TestServer.make()
        let token = try await server.serviceTokens.create(name: "gateway").token.revealPlaintext()
        return (server, token)
    }

    static func body(_ key: String) -> String {
        String(decoding: try! JSONSerialization.data(withJSONObject: ["key": key]), as: UTF8.self)
    }

    @Test func aValidKeyIsAnsweredWithItsAccountEnvironmentAndHintOnly() async throws {
        let (server, token) = try await Self.serverWithToken()
        let key = server.key(server.acme, .production)
        try await server.test { client in
            let response = try await client.call(.post, "/keys/verify", key: token, json: Self.body(key))
            #expect(response.status == .ok)
            #expect(response["valid"] as? Bool == true)
            #expect(response["accountId"] as? String == server.acme.id.rawValue)
            #expect(response["environment"] as? String == "production")
            #expect(response["keyHint"] as? String == "kw_prod_…" + key.suffix(4))
            #expect(Set(response.object.keys) == ["valid", "accountId", "environment", "keyHint"])
            #expect(!response.text.contains(key) && !response.text.contains(server.globex.id.rawValue))
            #expect(response.headers[.cacheControl] == "no-store")
        }
    }

    @Test func eachRefusedKeyIsA200WithTheAPIsCode() async throws {
        let (server, token) = try await Self.serverWithToken()
        let environment = EnvironmentID(accountID: server.acme.id, environment: .development)
        let revoked = server.key(server.acme, .development)
        _ = try await server.keys.generate(for: environment, createdBy: "test")
        let unknown = GeneratedSecretKey.generate(for: .development).revealPlaintext()
        let cases: [(String, String)] = [
            (revoked, "revoked_api_key"), (unknown, "invalid_api_key"), (String(unknown.dropLast()), "malformed_api_key"),
            ("", "malformed_api_key"), ("eyJhbGciOiJFUzI1NiJ9.eyJzdWIiOiJ4In0.c2ln", "user_token_not_accepted"),
        ]
        try await server.test { client in
            for (key, code) in cases {
                let response = try await client.call(.post, "/keys/verify", key: token, json: Self.body(key))
                #expect(response.status == .ok, "\(code)")
                #expect(response["valid"] as? Bool == false)
                #expect(response.code == code)
                #expect(response.message?.isEmpty == false)
                #expect(response["accountId"] == nil && response["environment"] == nil)
                #expect(key.isEmpty || !response.text.contains(key), "the key is echoed")
            }
            let answer = try await client.call(.post, "/keys/verify", key: token, json: Self.body(revoked))
            #expect(answer["revokedAt"] is String && answer["revocationReason"] as? String == "regenerated")
        }
    }

    @Test func aKeyOfOneAccountNeverRevealsAnother() async throws {
        let (server, token) = try await Self.serverWithToken()
        try await server.test { client in
            for account in [server.acme, server.globex] {
                let other = account.id == server.acme.id ? server.globex : server.acme
                for environment in Environment.allCases {
                    let response = try await client.call(.post, "/keys/verify", key: token, json: Self.body(server.key(account, environment)))
                    #expect(response["accountId"] as? String == account.id.rawValue)
                    #expect(response["environment"] as? String == environment.rawValue)
                    #expect(!response.text.contains(other.id.rawValue))
                }
            }
        }
    }

    @Test func theServiceTokenIsRequiredAndAnAccountKeyIsNotOne() async throws {
        let (server, token) = try await Self.serverWithToken()
        let key = server.key(server.acme, .development)
        let revoked = try await server.serviceTokens.create(name: "old").token.revealPlaintext()
        _ = try #require(try await server.serviceTokens.revoke(.name("old")))
        try await server.test { client in
            let cases: [(HTTPFields, String, Bool)] = [
                ([:], "missing_service_token", false),
                ([.authorization: "Basic \(token)"], "missing_service_token", false),
                ([.authorization: "Bearer \(key)"], "api_key_not_accepted", true),
                ([.authorization: "Bearer \(GeneratedServiceToken.generate().revealPlaintext())"], "invalid_service_token", true),
                ([.authorization: "Bearer \(token.dropLast())\(token.last == "A" ? "B" : "A")"], "invalid_service_token", true),
                ([.authorization: "Bearer \(revoked)"], "revoked_service_token", true),
            ]
            for (headers, code, invalidToken) in cases {
                let response = try await client.call(.post, "/keys/verify", json: Self.body(key), headers: headers)
                #expect(response.status == .unauthorized, "\(code)")
                #expect(response.code == code)
                let challenge = try #require(response.headers[.wwwAuthenticate])
                #expect(challenge.contains(#"error="invalid_token""#) == invalidToken, "\(code)")
                #expect(!response.text.contains(key) && !response.text.contains(token))
            }
            // The service token opens nothing of the Users API.
            let whoami = try await client.call(.get, "/whoami", key: token)
            #expect(whoami.code == "malformed_api_key")
        }
    }

    @Test func malformedBodiesGetTheUsual400s() async throws {
        let (server, token) = try await Self.serverWithToken()
        try await server.test { client in
            for body in ["", "{}", #"{"key": 5}"#, "{not json", "[]", #"{"key": null}"#] {
                let response = try await client.execute(
                    uri: "/keys/verify",
                    method: .post,
                    headers: [.authorization: "Bearer \(token)", .contentType: "application/json"],
                    body: ByteBuffer(string: body)
                ) { JSONResponse(status: $0.status, headers: $0.headers, text: String(buffer: $0.body)) }
                #expect(response.status == .badRequest, "\(body)")
                #expect(response.code == "invalid_json", "\(body)")
            }
            let get = try await client.call(.get, "/keys/verify", key: token)
            #expect(get.status == .methodNotAllowed)
        }
    }

    @Test func neitherTheKeyNorTheServiceTokenIsLogged() async throws {
        let (server, token) = try await Self.serverWithToken()
        let key = server.key(server.globex, .production)
        try await server.test { client in
            _ = try await client.call(.post, "/keys/verify", key: token, json: Self.body(key))
            _ = try await client.call(.post, "/keys/verify", key: key, json: Self.body(key))
            _ = try await client.call(.post, "/keys/verify", key: token, json: Self.body(String(key.dropLast())))
        }
        let logs = server.logs.all.joined(separator: "\n")
        #expect(logs.contains("service token created"), "the logs are captured")
        let leakedKey = logs.contains(key.dropLast(4)) || logs.contains(key.dropFirst(8).dropLast(4))
        let leakedToken = logs.contains(token.dropLast(4)) || logs.contains(token.dropFirst(5).dropLast(4))
        #expect(!leakedKey && !leakedToken)
    }
}
