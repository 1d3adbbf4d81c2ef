import Foundation
import HTTPTypes
import HummingbirdTesting
import KeywayCore
import Testing

/// The key's rate limit on `/auth` and `/keys/verify`: one count with the API's.
@Suite struct VerificationRateLimitTests {
    /// A server whose limits apply, `limit` a second on Acme's development key, and a service token.
    static func server(limit: Int) async throws -> (TestServer, key: String, token: String) {
        let server = try await TestServer.make(limitRequests: true)
        let environment = EnvironmentID(accountID: server.acme.id, environment: .development)
        try await server.rateLimits.set(.requestsPerSecond(limit), for: environment, audit: .system)
        let token = try await server.serviceTokens.create(name: "gateway").token.revealPlaintext()
        return (server, server.key(server.acme, .development), token)
    }

    static func verify(_ client: any TestClientProtocol, _ key: String, token: String) async throws -> JSONResponse {
        try await client.call(.post, "/keys/verify", key: token, json: KeyVerificationTests.body(key))
    }

    @Test func authCarriesTheFieldsAndAnswers429OverTheLimitBeforeAnyLookup() async throws {
        let (server, key, _) = try await Self.server(limit: 2)
        try await server.test { client in
            let bearer: HTTPFields = [.authorization: "Bearer \(key)"]
            for remaining in [1, 0] {
                let answer = try await ForwardAuthTests.send(client, headers: bearer)
                #expect(answer.status == .ok)
                #expect(answer.body.isEmpty)
                #expect(answer.headers[.rateLimitPolicy] == #""default";q=2;w=1"#)
                #expect(answer.headers[.rateLimit] == #""default";r=\#(remaining);t=1"#)
                #expect(answer.headers[.retryAfter] == nil)
            }
            // Over the limit, a user reference is not even looked up: 429, not 404.
            for headers in [bearer, [.authorization: "Bearer \(key)", .xKeywayUserID: "nobody"]] {
                let refused = try await ForwardAuthTests.send(client, .post, "/auth/v1/workflows", headers: headers)
                #expect(refused.status == .tooManyRequests)
                #expect(refused.json.code == "rate_limited")
                #expect(refused.headers[.contentType] == "application/problem+json")
                #expect(refused.headers[.retryAfter] == "1")
                #expect(refused.headers[.rateLimitPolicy] == #""default";q=2;w=1"#)
                #expect(refused.headers[.rateLimit] == #""default";r=0;t=1"#)
                #expect(refused.headers[.keywayAccountID] == nil && refused.headers[.keywayKeyHint] == nil)
            }
            server.rateClock.advance(milliseconds: 2000)
            // An unknown user is a 404 that carries the fields, as the API's errors do.
            let notFound = try await ForwardAuthTests.send(client, headers: [.authorization: "Bearer \(key)", .xKeywayUserID: "nobody"])
            #expect(notFound.status == .notFound)
            #expect(notFound.json.code == "user_not_found")
            #expect(notFound.headers[.rateLimit] == #""default";r=1;t=1"#)
        }
    }

    @Test func verifyReportsTheLimitAndALimitedKeyIsNotValid() async throws {
        let (server, key, token) = try await Self.server(limit: 2)
        let unlimited = server.key(server.globex, .production)
        try await server.rateLimits.set(.off, for: EnvironmentID(accountID: server.globex.id, environment: .production), audit: .system)
        try await server.test { client in
            for remaining in [1, 0] {
                let response = try await Self.verify(client, key, token: token)
                #expect(response["valid"] as? Bool == true)
                #expect(Set(response.object.keys) == ["valid", "accountId", "environment", "keyHint", "rateLimit"])
                let rateLimit = try #require(response["rateLimit"] as? [String: Int])
                #expect(rateLimit == ["limit": 2, "remaining": remaining, "reset": 1])
                // The fields would describe the key, not the service's request.
                #expect(response.headers[.rateLimit] == nil && response.headers[.retryAfter] == nil)
            }
            let limited = try await Self.verify(client, key, token: token)
            #expect(limited.status == .ok)
            #expect(limited["valid"] as? Bool == false)
            #expect(limited.code == "rate_limited")
            #expect(limited["retryAfter"] as? String == "1")
            #expect(limited["rateLimit"] as? [String: Int] == ["limit": 2, "remaining": 0, "reset": 1])
            #expect(limited["accountId"] == nil && limited["keyHint"] == nil)
            // No limit, no report.
            let free = try await Self.verify(client, unlimited, token: token)
            #expect(free["valid"] as? Bool == true && free["rateLimit"] == nil)
        }
    }

    @Test func theAPIAuthAndVerifyShareOneCount() async throws {
        let (server, key, token) = try await Self.server(limit: 3)
        try await server.test { client in
            #expect(try await client.call(.get, "/whoami", key: key).status == .ok)
            #expect(try await ForwardAuthTests.send(client, headers: [.authorization: "Bearer \(key)"]).status == .ok)
            let last = try await Self.verify(client, key, token: token)
            #expect(last["rateLimit"] as? [String: Int] == ["limit": 3, "remaining": 0, "reset": 1])
            #expect(try await client.call(.get, "/whoami", key: key).status == .tooManyRequests)
            #expect(try await ForwardAuthTests.send(client, headers: [.authorization: "Bearer \(key)"]).status == .tooManyRequests)
            #expect(try await Self.verify(client, key, token: token).code == "rate_limited")
        }
    }
}
