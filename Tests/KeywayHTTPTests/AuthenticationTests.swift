import Foundation
import HTTPTypes
import Hummingbird
import HummingbirdTesting
import KeywayCore
import Testing

/// Every way a credential can be wrong gets a 4xx with its own code, never a 500, and changes nothing.
@Suite struct AuthenticationTests {
    struct BadCredential: Sendable, CustomTestStringConvertible {
        let name: String
        let headers: [String]
        let status: HTTPResponse.Status
        let code: String
        /// Whether `WWW-Authenticate` carries `error="invalid_token"` (RFC 6750: not when no credentials were sent).
        let invalidToken: Bool
        var testDescription: String { name }
    }

    static func badCredentials(validKey: String) -> [BadCredential] {
        let body = validKey.dropFirst("kw_dev_".count)
        let badChecksum = String(validKey.dropLast()) + (validKey.last == "A" ? "B" : "A")
        return [
            BadCredential(name: "missing", headers: [], status: .unauthorized, code: "missing_api_key", invalidToken: false),
            BadCredential(name: "empty", headers: [""], status: .unauthorized, code: "missing_api_key", invalidToken: false),
            BadCredential(name: "blank", headers: ["   "], status: .unauthorized, code: "missing_api_key", invalidToken: false),
            BadCredential(name: "basic scheme", headers: ["Basic \(validKey)"], status: .unauthorized, code: "missing_api_key", invalidToken: false),
            BadCredential(name: "key without scheme", headers: [validKey], status: .unauthorized, code: "missing_api_key", invalidToken: false),
            BadCredential(name: "bearer without key", headers: ["Bearer"], status: .unauthorized, code: "missing_api_key", invalidToken: false),
            BadCredential(name: "bearer and spaces", headers: ["Bearer    "], status: .unauthorized, code: "missing_api_key", invalidToken: false),
            BadCredential(
                name: "two words",
                headers: ["Bearer \(validKey) extra"],
                status: .unauthorized,
                code: "malformed_api_key",
                invalidToken: true
            ),
            BadCredential(
                name: "two headers",
                headers: ["Bearer \(validKey)", "Bearer \(validKey)"],
                status: .unauthorized,
                code: "malformed_api_key",
                invalidToken: true
            ),
            BadCredential(
                name: "oversized",
                headers: ["Bearer kw_dev_" + String(repeating: "A", count: 8000)],
                status: .unauthorized,
                code: "malformed_api_key",
                invalidToken: true
            ),
            BadCredential(
                name: "non-ASCII",
                headers: ["Bearer kw_dev_" + String(body.dropLast(2)) + "éé"],
                status: .unauthorized,
                code: "malformed_api_key",
                invalidToken: true
            ),
            BadCredential(
                name: "bad checksum",
                headers: ["Bearer \(badChecksum)"],
                status: .unauthorized,
                code: "malformed_api_key",
                invalidToken: true
            ),
            BadCredential(
                name: "truncated",
                headers: ["Bearer \(validKey.dropLast(3))"],
                status: .unauthorized,
                code: "malformed_api_key",
                invalidToken: true
            ),
            BadCredential(
                name: "other vendor",
                headers: ["Bearer sk_live_1234567890"],
                status: .unauthorized,
                code: "malformed_api_key",
                invalidToken: true
            ),
            BadCredential(
                name: "unknown key",
                headers: ["Bearer \(GeneratedSecretKey.generate(for: .development).revealPlaintext())"],
                status: .unauthorized,
                code: "invalid_api_key",
                invalidToken: true
            ),
            BadCredential(
                name: "user token",
                headers: ["Bearer eyJhbGciOiJFUzI1NiJ9.eyJzdWIiOiIxIn0.c2lnbmF0dXJl"],
                status: .unauthorized,
                code: "user_token_not_accepted",
                invalidToken: true
            ),
        ]
    }

    @Test func everyBadCredentialGetsItsOwnCodeAndChangesNothing() async throws {
        let server = try await TestServer.make()
        let validKey = server.key(server.acme, .development)
        try await server.test { client in
            _ = try await client.createUser("before", key: validKey)
            for credential in Self.badCredentials(validKey: validKey) {
                for (method, uri, json) in Self.endpoints {
                    var headers: HTTPFields = [.contentType: "application/json"]
                    for value in credential.headers { headers.append(HTTPField(name: .authorization, value: value)) }
                    let response = try await client.execute(
                        uri: uri,
                        method: method,
                        headers: headers,
                        body: json.map { ByteBuffer(string: $0) }
                    ) { JSONResponse(status: $0.status, headers: $0.headers, text: String(buffer: $0.body)) }
                    let label = "\(credential.name): \(method) \(uri)"
                    #expect(response.status == credential.status, "\(label): \(response.text)")
                    #expect(response.code == credential.code, "\(label)")
                    #expect(response.message?.isEmpty == false, "\(label)")
                    let challenge = response.headers[.wwwAuthenticate]
                    #expect(challenge?.hasPrefix(#"Bearer realm="keyway""#) == true, "\(label)")
                    #expect(challenge?.contains(#"error="invalid_token""#) == credential.invalidToken, "\(label)")
                    #expect(!response.text.contains(validKey), "\(label): the key is echoed")
                }
            }
            let users = try await client.call(.get, "/users", key: validKey)
            #expect((users["data"] as? [[String: Any]])?.compactMap { $0["username"] as? String } == ["before"])
        }
    }

    static let endpoints: [(HTTPRequest.Method, String, String?)] = [
        (.get, "/whoami", nil),
        (.get, "/users", nil),
        (.post, "/users", #"{"username": "intruder"}"#),
        (.post, "/users/batch", #"[{"username": "intruder"}]"#),
        (.get, "/users/before", nil),
        (.put, "/users/before", #"{"username": "renamed"}"#),
        (.delete, "/users/before", nil),
        (.get, "/2023-12/users", nil),
    ]

    @Test func theSchemeIsCaseInsensitiveAndWhitespaceIsTolerated() async throws {
        let server = try await TestServer.make()
        let key = server.key(server.globex, .production)
        try await server.test { client in
            for value in ["bearer \(key)", "BEARER \(key)", "  Bearer   \(key)  ", "Bearer\t\(key)"] {
                let response = try await client.call(.get, "/whoami", headers: [.authorization: value])
                #expect(response.status == .ok, "\(value.count) chars: \(response.text)")
            }
        }
    }

    @Test(arguments: ["api_key=KEY", "access_token=KEY", "token=x", "key=KEY", "q=KEY", "limit=5&apiKey=KEY"])
    func keysInTheQueryStringAreRefused(query: String) async throws {
        let server = try await TestServer.make()
        let key = server.key(server.acme, .development)
        try await server.test { client in
            let uri = "/users?" + query.replacingOccurrences(of: "KEY", with: key)
            let withHeader = try await client.call(.get, uri, key: key)
            #expect(withHeader.status == .badRequest)
            #expect(withHeader.code == "api_key_in_query")
            #expect(!withHeader.text.contains(key))
            let withoutHeader = try await client.call(.post, uri, json: #"{"username":"x"}"#)
            #expect(withoutHeader.code == "api_key_in_query")
        }
        #expect(try await server.store.user("x", in: .init(accountID: server.acme.id, environment: .development)) == nil)
    }

    @Test func aRevokedKeySaysWhenAndWhy() async throws {
        let server = try await TestServer.make()
        let environment = EnvironmentID(accountID: server.acme.id, environment: .development)
        let old = server.key(server.acme, .development)
        let new = try await server.keys.generate(for: environment, createdBy: "test").key.revealPlaintext()
        try await server.test { client in
            let response = try await client.call(.get, "/whoami", key: old)
            #expect(response.status == .unauthorized)
            #expect(response.code == "revoked_api_key")
            #expect(response["revocationReason"] as? String == "regenerated")
            let revokedAt = try #require(response["revokedAt"] as? String)
            #expect(response.message?.contains(revokedAt) == true)
            #expect(response.headers[.wwwAuthenticate] == #"Bearer realm="keyway", error="invalid_token""#)
            #expect(try await client.call(.get, "/whoami", key: new).status == .ok)
        }
    }

    @Test func malformedBodiesAreRefusedWithoutChangingAnything() async throws {
        let server = try await TestServer.make()
        let key = server.key(server.acme, .development)
        try await server.test { client in
            let id = try await client.createUser("original", key: key, fullName: "Original")
            let cases: [(HTTPRequest.Method, String, String, String)] = [
                (.post, "/users", "", "invalid_json"),
                (.post, "/users", "{", "invalid_json"),
                (.post, "/users", "[]", "invalid_json"),
                (.post, "/users", "null", "invalid_json"),
                (.post, "/users", #"{"fullName": "No Username"}"#, "invalid_json"),
                (.post, "/users", #"{"username": 7}"#, "invalid_json"),
                (.post, "/users", #"{"username": null}"#, "invalid_json"),
                (.post, "/users", #"{"username": "ok", "fullName": ["x"]}"#, "invalid_json"),
                (.post, "/users", #"{"username": ""}"#, "invalid_input:username"),
                (.post, "/users", #"{"username": "a\u0000b"}"#, "invalid_input:username"),
                (.post, "/users", #"{"username": "two\nlines"}"#, "invalid_input:username"),
                (.post, "/users", #"{"username": "\#(String(repeating: "x", count: 256))"}"#, "invalid_input:username"),
                (.post, "/users/batch", #"{"users": "everyone"}"#, "invalid_json"),
                (.post, "/users/batch", #"{"people": []}"#, "invalid_json"),
                (.put, "/users/\(id)", "{}", "invalid_input:username"),
                (.put, "/users/\(id)", #"{"username": ""}"#, "invalid_input:username"),
                (.put, "/users/\(id)", #"{"username": 5}"#, "invalid_json"),
                (.put, "/users/\(id)", #"{"fullName": "\#(String(repeating: "y", count: 300))"}"#, "invalid_input:fullName"),
                (.put, "/users/\(id)", "not json", "invalid_json"),
            ]
            for (method, uri, body, code) in cases {
                let response = try await client.execute(
                    uri: uri,
                    method: method,
                    headers: [.authorization: "Bearer \(key)", .contentType: "application/json"],
                    body: ByteBuffer(string: body)
                ) { JSONResponse(status: $0.status, headers: $0.headers, text: String(buffer: $0.body)) }
                // `invalid_input:field` also names the field the error must point at.
                let (expectedCode, field) =
                    code.contains(":") ? (String(code.split(separator: ":")[0]), String(code.split(separator: ":")[1])) : (code, nil)
                #expect(response.status == .badRequest, "\(method) \(uri) \(body.prefix(40)): \(response.text)")
                #expect(response.code == expectedCode, "\(method) \(uri) \(body.prefix(40)): \(response.text)")
                if let field { #expect(response["field"] as? String == field, "\(method) \(uri) \(body.prefix(40)): \(response.text)") }
                #expect(response.message?.isEmpty == false)
            }
            // The limit is 4 MiB exactly: a body of that size is read (and refused for its content), one byte more is not.
            func body(ofSize size: Int) -> String {
                let frame = #"{"username": "big", "fullName": ""# + #""}"#
                return #"{"username": "big", "fullName": ""# + String(repeating: "z", count: size - frame.utf8.count) + #""}"#
            }
            let atLimit = try await client.call(.post, "/users", key: key, json: body(ofSize: 4 * 1024 * 1024))
            #expect(atLimit.code == "invalid_input", "4 MiB is read: \(atLimit.text.prefix(200))")
            let tooLarge = try await client.call(.post, "/users", key: key, json: body(ofSize: 4 * 1024 * 1024 + 1))
            #expect(tooLarge.status == .contentTooLarge)
            #expect(tooLarge.code == "body_too_large")

            let users = try await client.call(.get, "/users", key: key)
            let data = try #require(users["data"] as? [[String: Any]])
            #expect(data.count == 1)
            #expect(data.first?["username"] as? String == "original")
            #expect(data.first?["fullName"] as? String == "Original")
        }
    }

    @Test func noSecretReachesTheLogs() async throws {
        let server = try await TestServer.make()
        let environment = EnvironmentID(accountID: server.acme.id, environment: .development)
        let old = server.key(server.acme, .development)
        let new = try await server.keys.generate(for: environment, createdBy: "test").key.revealPlaintext()
        try await server.test { client in
            _ = try await client.call(.get, "/whoami", key: old)
            _ = try await client.call(.get, "/whoami", key: new)
            _ = try await client.call(.get, "/users?api_key=\(new)")
            _ = try await client.call(.get, "/users", headers: [.authorization: "Basic \(new)"])
            _ = try await client.call(.get, "/users", key: String(new.dropLast()) + "0")
            _ = try await client.createUser("logged", key: new)
        }
        let logs = server.logs.all
        #expect(logs.contains { $0.contains("secret key generated") }, "the capture works")
        for secret in server.initialKeys.values + [new] {
            let body = String(secret.split(separator: "_").last!.prefix(30))
            #expect(!logs.contains { $0.contains(body) }, "a key's secret part reached the logs")
        }
    }
}
