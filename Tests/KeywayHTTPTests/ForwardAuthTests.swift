import Foundation
import HTTPTypes
import Hummingbird
import HummingbirdTesting
import KeywayCore
import Testing

/// `/auth`: a reverse proxy's sub-request, answered with identity headers and no body.
@Suite struct ForwardAuthTests {
    struct Answer: Sendable {
        let status: HTTPResponse.Status
        let headers: HTTPFields
        let body: [UInt8]
        var json: JSONResponse { JSONResponse(status: status, headers: headers, text: String(decoding: body, as: UTF8.self)) }
    }

    static func send(
        _ client: any TestClientProtocol,
        _ method: HTTPRequest.Method = .get,
        _ uri: String = "/auth",
        headers: HTTPFields
    ) async throws -> Answer {
        try await client.execute(uri: uri, method: method, headers: headers, body: nil) { response in
            Answer(status: response.status, headers: response.headers, body: Array(buffer: response.body))
        }
    }

    @Test func aValidKeyIs200WithIdentityHeadersAndNoBodyForEveryMethodAndPath() async throws {
        let server = try await TestServer.make()
        let key = server.key(server.globex, .development)
        try await server.test(.live) { client in
            let unrouted = ["TRACE", "PROPFIND", "QUERY"].map { HTTPRequest.Method($0)! }
            for method in [HTTPRequest.Method.get, .head, .post, .put, .patch, .delete, .options] + unrouted {
                for uri in ["/auth", "/auth/v1/workflows/42?x=1"] {
                    let answer = try await Self.send(client, method, uri, headers: [.authorization: "Bearer \(key)"])
                    #expect(answer.status == .ok, "\(method) \(uri)")
                    #expect(answer.body.isEmpty, "\(method) \(uri) has a body")
                    #expect(answer.headers[.contentLength] == "0", "an empty 200 says so: nginx then keeps the connection")
                    #expect(answer.headers[.keywayAccountID] == server.globex.id.rawValue)
                    #expect(answer.headers[.keywayEnvironment] == "development")
                    #expect(answer.headers[.keywayKeyHint] == "kw_dev_..." + key.suffix(4), "the hint in visible ASCII")
                    #expect(answer.headers[.keywayUserID] == nil)
                    #expect(!answer.headers.map(\.value).contains { $0.contains(key.dropLast(4)) }, "the key is echoed")
                }
            }
        }
    }

    @Test func refusedKeysAre401WithTheUsualErrorAndChallenge() async throws {
        let server = try await TestServer.make()
        let environment = EnvironmentID(accountID: server.acme.id, environment: .production)
        let revoked = server.key(server.acme, .production)
        _ = try await server.keys.generate(for: environment, createdBy: "test")
        let unknown = GeneratedSecretKey.generate(for: .production).revealPlaintext()
        let cases: [(HTTPFields, String, String)] = [
            ([:], "missing_api_key", #"Bearer realm="keyway""#),
            ([.authorization: "Bearer \(revoked)"], "revoked_api_key", #"Bearer realm="keyway", error="invalid_token""#),
            ([.authorization: "Bearer \(unknown)"], "invalid_api_key", #"Bearer realm="keyway", error="invalid_token""#),
            ([.authorization: "Bearer \(unknown.dropLast())"], "malformed_api_key", #"Bearer realm="keyway", error="invalid_token""#),
        ]
        try await server.test { client in
            for (headers, code, challenge) in cases {
                let answer = try await Self.send(client, .post, headers: headers)
                #expect(answer.status == .unauthorized, "\(code)")
                #expect(answer.json.code == code)
                #expect(answer.json["requestId"] is String && answer.json.message?.isEmpty == false)
                #expect(answer.headers[.wwwAuthenticate] == challenge)
                #expect(answer.headers[.keywayAccountID] == nil && answer.headers[.keywayEnvironment] == nil)
                #expect(!answer.json.text.contains(revoked.dropLast(4)) && !answer.json.text.contains(unknown.dropLast(4)))
            }
        }
    }

    @Test func theUserContextIsResolvedInsideTheKeysEnvironmentOnly() async throws {
        let server = try await TestServer.make()
        let key = server.key(server.acme, .development)
        try await server.test { client in
            let ada = try await client.createUser("ada@example.com", key: key)
            let production = try await client.createUser("ada@example.com", key: server.key(server.acme, .production))
            let other = try await client.createUser("grace@example.com", key: server.key(server.globex, .development))
            for reference in [ada, "ada@example.com"] {
                let answer = try await Self.send(client, headers: [.authorization: "Bearer \(key)", .xKeywayUserID: reference])
                #expect(answer.status == .ok)
                #expect(answer.headers[.keywayUserID] == ada)
                #expect(answer.body.isEmpty)
            }
            for reference in [production, other, "grace@example.com", "nobody", ""] {
                let answer = try await Self.send(client, headers: [.authorization: "Bearer \(key)", .xKeywayUserID: reference])
                #expect(answer.status == .notFound, "\(reference)")
                #expect(answer.json.code == "user_not_found")
                #expect(answer.json["otherEnvironment"] == nil, "another environment is hinted at")
                #expect(answer.headers[.keywayUserID] == nil)
            }
            // A long reference is quoted back only in part.
            let long = String(repeating: "a", count: 10_000)
            let tooLong = try await Self.send(client, headers: [.authorization: "Bearer \(key)", .xKeywayUserID: long])
            #expect(tooLong.status == .notFound)
            #expect(tooLong.body.count < 1000, "\(tooLong.body.count) bytes")
            // The key comes first: an unknown key with a user is a 401, and says nothing of the user.
            let refused = try await Self.send(client, headers: [.xKeywayUserID: ada])
            #expect(refused.status == .unauthorized)
        }
    }

    @Test func theClientsAPIVersionIsTheUpstreamsBusiness() async throws {
        let server = try await TestServer.make()
        try await server.test { client in
            let headers: HTTPFields = [.authorization: "Bearer \(server.key(server.acme, .development))", .xAPIVersion: "1999-01"]
            let answer = try await Self.send(client, headers: headers)
            #expect(answer.status == .ok)
        }
    }

    @Test func theKeyIsNeverLogged() async throws {
        let server = try await TestServer.make()
        let key = server.key(server.acme, .development)
        try await server.test { client in
            _ = try await Self.send(client, headers: [.authorization: "Bearer \(key)", .xKeywayUserID: "nobody"])
            _ = try await Self.send(client, headers: [.authorization: "Bearer \(key.dropLast())"])
            _ = try await Self.send(client, headers: [.authorization: "Bearer \(key)"])
        }
        let logs = server.logs.all.joined(separator: "\n")
        #expect(logs.contains("/auth"), "the requests are logged")
        let leaked = logs.contains(key.dropLast(4)) || logs.contains(key.dropFirst(7).dropLast(4))
        #expect(!leaked)
    }
}

extension HTTPField.Name {
    static let keywayAccountID = Self("keyway-account-id")!
    static let keywayEnvironment = Self("keyway-environment")!
    static let keywayKeyHint = Self("keyway-key-hint")!
    static let keywayUserID = Self("keyway-user-id")!
    static let xKeywayUserID = Self("x-keyway-user-id")!
    static let xAPIVersion = Self("x-api-version")!
}
