import Foundation
import HTTPTypes
import Hummingbird
import HummingbirdTesting
import KeywayCore
import Testing

@testable import KeywayHTTP

@Suite struct UsersAPITests {
    @Test func whoamiNamesTheKeysAccountAndEnvironment() async throws {
        let server = try await TestServer.make()
        try await server.test { client in
            let response = try await client.call(.get, "/whoami", key: server.key(server.acme, .production))
            #expect(response.status == .ok)
            #expect(response["accountId"] as? String == server.acme.id.rawValue)
            #expect(response["environment"] as? String == "production")
            let hint = try #require(response["keyHint"] as? String)
            #expect(hint.hasPrefix("kw_prod_…"))
            #expect(server.key(server.acme, .production).hasSuffix(hint.suffix(4)))
        }
    }

    @Test func usersCanBeCreatedReadUpdatedAndDeleted() async throws {
        let server = try await TestServer.make()
        try await server.test { client in
            let key = server.key(server.acme, .development)
            let id = try await client.createUser("  alice@example.com ", key: key, fullName: "Alice")
            #expect(UserID(validating: id) != nil)

            let byId = try await client.call(.get, "/users/\(id)", key: key)
            #expect(byId.status == .ok)
            #expect(byId["username"] as? String == "alice@example.com", "usernames are trimmed")
            #expect(byId["fullName"] as? String == "Alice")
            #expect(byId["userId"] as? String == id)
            let createdAt = try #require(byId["createdAt"] as? String)
            #expect(try Date(createdAt, strategy: .iso8601) <= Date())

            let byUsername = try await client.call(.get, "/users/alice%40example.com", key: key)
            #expect(byUsername.text == byId.text)

            let updated = try await client.call(.put, "/users/\(id)", key: key, json: #"{"fullName": "Alice Liddell"}"#)
            #expect(updated.status == .ok)
            #expect(updated["fullName"] as? String == "Alice Liddell")
            #expect(updated["username"] as? String == "alice@example.com")

            let renamed = try await client.call(.put, "/users/alice@example.com", key: key, json: #"{"username": "alice2", "fullName": null}"#)
            #expect(renamed["username"] as? String == "alice2")
            #expect(renamed.object["fullName"] is NSNull, "null clears the full name")

            let deleted = try await client.call(.delete, "/users/alice2", key: key)
            #expect(deleted.status == .ok)
            #expect(deleted["success"] as? Bool == true)
            let gone = try await client.call(.get, "/users/\(id)", key: key)
            #expect(gone.status == .notFound)
            #expect(gone.code == "user_not_found")
        }
    }

    @Test func aTakenUsernameIsAConflict() async throws {
        let server = try await TestServer.make()
        try await server.test { client in
            let key = server.key(server.acme, .development)
            _ = try await client.createUser("bob", key: key)
            let again = try await client.call(.post, "/users", key: key, json: #"{"username": "bob"}"#)
            #expect(again.status == .conflict)
            #expect(again.code == "username_taken")
            _ = try await client.createUser("carol", key: key)
            let rename = try await client.call(.put, "/users/carol", key: key, json: #"{"username": "bob"}"#)
            #expect(rename.status == .conflict)
            #expect(try await client.call(.get, "/users/carol", key: key).status == .ok)
        }
    }

    @Test func aUsernameThatIsAnotherUsersIdentifierIsRefusedOnEveryWrite() async throws {
        let server = try await TestServer.make()
        try await server.test { client in
            let key = server.key(server.acme, .development)
            let victim = try await client.createUser("victim", key: key)
            let created = try await client.call(.post, "/users", key: key, json: #"{"username": "\#(victim)"}"#)
            // A conflict with what the environment holds, like a taken username: 409, not a malformed request.
            #expect(created.status == .conflict)
            #expect(created.code == "username_taken")
            #expect(created["field"] as? String == "username")
            #expect(created.message?.contains("is the id of another user") == true)

            let batch = try await client.call(.post, "/users/batch", key: key, json: #"{"users": [{"username": "\#(victim)"}, {"username": "ok"}]}"#)
            #expect(batch.status == .ok)
            let invalid = try #require(batch["invalidUsers"] as? [[String: Any]])
            #expect(invalid.count == 1)
            #expect(invalid.first?["code"] as? String == "username_taken")
            #expect(invalid.first?["index"] as? Int == 0)

            let renamed = try await client.call(.put, "/users/ok", key: key, json: #"{"username": "\#(victim)"}"#)
            #expect(renamed.status == .conflict)
            #expect(renamed.code == "username_taken")
            #expect(try await client.call(.get, "/users/\(victim)", key: key)["username"] as? String == "victim")
        }
    }

    @Test func theOtherEnvironmentHintIsForIdentifiersOnly() async throws {
        let server = try await TestServer.make()
        try await server.test { client in
            let id = try await client.createUser("secret-launch-partner", key: server.key(server.acme, .production))
            let development = server.key(server.acme, .development)
            let byName = try await client.call(.get, "/users/secret-launch-partner", key: development)
            #expect(byName.status == .notFound)
            #expect(byName["otherEnvironment"] == nil, "a development key must not learn which usernames production has")
            #expect(byName.message?.contains("exists in your") == false)
            let byID = try await client.call(.get, "/users/\(id)", key: development)
            #expect(byID["otherEnvironment"] as? String == "production")
        }
    }

    @Test func aDecomposedSpellingNamesTheSameUser() async throws {
        let server = try await TestServer.make()
        try await server.test { client in
            let key = server.key(server.acme, .development)
            let id = try await client.createUser("caf\u{E9}", key: key)
            #expect(try await client.call(.get, "/users/cafe%CC%81", key: key)["userId"] as? String == id)
            #expect(try await client.call(.get, "/users/caf%C3%A9", key: key)["userId"] as? String == id)
            let again = try await client.call(.post, "/users", key: key, json: #"{"username": "cafe\u0301"}"#)
            #expect(again.code == "username_taken")
            let invisible = try await client.call(.post, "/users", key: key, json: #"{"username": "caf\u200b\u00e9"}"#)
            #expect(invisible.code == "invalid_input")
        }
    }

    @Test func aUserNamedBatchIsStillReachable() async throws {
        let server = try await TestServer.make()
        try await server.test { client in
            let key = server.key(server.acme, .development)
            _ = try await client.createUser("batch", key: key)
            #expect(try await client.call(.get, "/users/batch", key: key)["username"] as? String == "batch")
            #expect(try await client.call(.put, "/users/batch", key: key, json: #"{"fullName":"B"}"#)["fullName"] as? String == "B")
            #expect(try await client.call(.delete, "/users/batch", key: key).status == .ok)
        }
    }

    @Test func aBatchWithAnInvalidEntryCreatesNothingAndNamesEveryInvalidEntry() async throws {
        let server = try await TestServer.make()
        try await server.test { client in
            let key = server.key(server.acme, .development)
            let response = try await client.call(
                .post,
                "/users/batch",
                key: key,
                json: """
                    {"users": [
                        {"username": "u1", "fullName": "One"},
                        {"username": ""},
                        {"fullName": "no username"},
                        {"username": 42},
                        "not an object",
                        {"username": "u2"}
                    ]}
                    """
            )
            #expect(response.status == .badRequest)
            #expect(response.code == "invalid_users")
            let invalid = try #require(response["invalidUsers"] as? [[String: Any]])
            #expect(invalid.map { $0["index"] as? Int } == [1, 2, 3, 4])
            #expect(invalid.allSatisfy { $0["code"] as? String == "invalid_input" })
            let list = try await client.call(.get, "/users", key: key)
            #expect((list["data"] as? [Any])?.isEmpty == true, "a batch with a malformed entry creates nothing")
        }
    }

    @Test func batchCreatesEveryFreeUsernameAndReportsTheTakenOnes() async throws {
        let server = try await TestServer.make()
        try await server.test { client in
            let key = server.key(server.acme, .development)
            _ = try await client.createUser("existing", key: key)
            let response = try await client.call(
                .post,
                "/users/batch",
                key: key,
                json: #"{"users": [{"username": "u1", "fullName": "One"}, {"username": "existing"}, {"username": "u2"}, {"username": "u1"}]}"#
            )
            #expect(response.status == .ok)
            #expect(response["message"] as? String == "success")
            let invalid = try #require(response["invalidUsers"] as? [[String: Any]])
            #expect(invalid.map { $0["index"] as? Int } == [1, 3])
            #expect(invalid.map { $0["code"] as? String } == ["username_taken", "duplicate_in_batch"])
            let list = try await client.call(.get, "/users", key: key)
            let usernames = (list["data"] as? [[String: Any]])?.compactMap { $0["username"] as? String }
            #expect(Set(usernames ?? []) == ["existing", "u1", "u2"])

            let allTaken = try await client.call(.post, "/users/batch", key: key, json: #"[{"username": "u1"}, {"username": "existing"}]"#)
            #expect(allTaken.status == .conflict, "a batch refused only by what the environment holds is a conflict")
            #expect(allTaken.code == "no_valid_users")
            #expect((allTaken["invalidUsers"] as? [Any])?.count == 2)
        }
    }

    @Test func batchAcceptsABareArray() async throws {
        let server = try await TestServer.make()
        try await server.test { client in
            let key = server.key(server.acme, .production)
            let response = try await client.call(.post, "/users/batch", key: key, json: #"[{"username": "p1"}, {"username": "p2"}]"#)
            #expect(response.status == .ok)
            #expect((response["invalidUsers"] as? [Any])?.isEmpty == true)
            #expect(try await client.call(.get, "/users/p2", key: key).status == .ok)
        }
    }

    @Test func aBatchWithNoValidUserIsRefusedAndExplained() async throws {
        let server = try await TestServer.make()
        try await server.test { client in
            let key = server.key(server.acme, .development)
            let response = try await client.call(.post, "/users/batch", key: key, json: #"{"users": [{"username": ""}, {"nope": 1}]}"#)
            #expect(response.status == .badRequest)
            #expect(response.code == "invalid_users")
            #expect((response["invalidUsers"] as? [Any])?.count == 2)
            #expect(response["requestId"] as? String != nil)
            let empty = try await client.call(.post, "/users/batch", key: key, json: #"{"users": []}"#)
            #expect(empty.status == .badRequest)
            #expect(empty.code == "no_valid_users")
        }
    }

    @Test func aBatchOverTheLimitCreatesNothing() async throws {
        let server = try await TestServer.make()
        try await server.test { client in
            let key = server.key(server.acme, .development)
            let users = (0...1000).map { #"{"username":"bulk\#($0)"}"# }.joined(separator: ",")
            let response = try await client.call(.post, "/users/batch", key: key, json: "[\(users)]")
            #expect(response.status == .badRequest)
            #expect(response.code == "batch_too_large")
            let list = try await client.call(.get, "/users", key: key)
            #expect((list["data"] as? [Any])?.isEmpty == true)
        }
    }

    /// JSONDecoder also reads UTF-16 and UTF-32, where a character such as U+2022 holds a `"`
    /// byte: the byte scanner then reads every later comma as inside a string, and a batch
    /// of 1 500 users encoded as UTF-16 passed the limit and was created.
    @Test func aBatchOverTheLimitInUTF16CreatesNothing() async throws {
        let server = try await TestServer.make()
        try await server.test { client in
            let key = server.key(server.acme, .development)
            let users = ["{\"username\":\"u\u{2022}0\"}"] + (1...1500).map { #"{"username":"bulk\#($0)"}"# }
            let body = try #require(("{\"users\":[" + users.joined(separator: ",") + "]}").data(using: .utf16LittleEndian))
            let status = try await client.execute(
                uri: "/users/batch",
                method: .post,
                headers: [.authorization: "Bearer \(key)", .contentType: "application/json"],
                body: ByteBuffer(bytes: body)
            ) { $0.status }
            #expect(status == .badRequest)
            let list = try await client.call(.get, "/users?limit=5", key: key)
            #expect((list["data"] as? [Any])?.isEmpty == true, "\(list.text)")
        }
    }

    @Test func theBatchLimitHoldsWhileReadingNotAfterDecoding() {
        func holds(_ json: String, limit: Int = 3) -> Bool {
            JSONBody.holdsArray(longerThan: limit, withinDepth: 2, in: ByteBuffer(string: json))
        }
        #expect(!holds("[1,2,3]"))
        #expect(holds("[1,2,3,4]"))
        #expect(holds(#"{"users": [{"username": "a,b"}, {}, {"x": [1, 2, 3, 4, 5]}, "]", "\\"]}"#))
        #expect(
            !holds(#"{"users": [{"username": "a,b,c,d,e"}, {"x": [1, 2, 3, 4, 5]}, "\",\",\","]}"#),
            "commas in strings and deeper arrays do not count"
        )
        #expect(!holds(#"{"users": [[], [], []], "other": {}}"#))
        #expect(holds(" [ [] , [] , [] , [] ] "))
        // Two million entries: refused from its first elements, whatever follows (here, not even JSON).
        let huge = ByteBuffer(string: "[" + String(repeating: "{},", count: 2_000_000) + "garbage")
        #expect(JSONBody.holdsArray(longerThan: 1000, withinDepth: 2, in: huge))
    }

    @Test func listingPagesThroughEveryUserWithACursor() async throws {
        let server = try await TestServer.make()
        try await server.test { client in
            let key = server.key(server.acme, .development)
            var created: Set<String> = []
            let batch = (0..<25).map { #"{"username":"user\#($0)"}"# }.joined(separator: ",")
            #expect(try await client.call(.post, "/users/batch", key: key, json: "[\(batch)]").status == .ok)
            for page in try await client.call(.get, "/users?limit=1000", key: key)["data"] as? [[String: Any]] ?? [] {
                created.insert(page["userId"] as! String)
            }
            #expect(created.count == 25)

            var seen: [String] = []
            var cursor: String?
            repeat {
                let uri = "/users?limit=10" + (cursor.map { "&cursor=\($0)" } ?? "")
                let page = try await client.call(.get, uri, key: key)
                #expect(page.status == .ok)
                let data = try #require(page["data"] as? [[String: Any]])
                #expect(data.count <= 10)
                seen += data.compactMap { $0["userId"] as? String }
                cursor = page["nextCursor"] as? String
                #expect(page.object.keys.contains("nextCursor"))
            } while cursor != nil && seen.count < 100
            #expect(seen == seen.sorted())
            #expect(Set(seen) == created)
            #expect(seen.count == 25)
        }
    }

    @Test(arguments: ["%00", "bob%00x", "%ZZ", "%", "%FF"])
    func aUserReferenceThatIsNotTextIsRefused(reference: String) async throws {
        let server = try await TestServer.make()
        try await server.test { client in
            let key = server.key(server.acme, .development)
            _ = try await client.createUser("bob", key: key)
            let response = try await client.call(.get, "/users/\(reference)", key: key)
            #expect(response.status == .badRequest)
            #expect(response.code == "invalid_input")
        }
    }

    /// Text no username can hold (a control character) is still text: it names no user, a 404,
    /// as the OpenAPI document says of any reference but U+0000.
    @Test(arguments: ["bob%0A", "%7F", "b%08ob", "%09"])
    func aUserReferenceNoUsernameCanHoldNamesNoUser(reference: String) async throws {
        let server = try await TestServer.make()
        try await server.test { client in
            let key = server.key(server.acme, .development)
            _ = try await client.createUser("bob", key: key)
            let response = try await client.call(.get, "/users/\(reference)", key: key)
            #expect(response.status == .notFound)
            #expect(response.code == "user_not_found")
        }
    }

    @Test func anExplicitNullUsernameIsRefusedOnUpdate() async throws {
        let server = try await TestServer.make()
        try await server.test { client in
            let key = server.key(server.acme, .development)
            _ = try await client.createUser("bob", key: key)
            let response = try await client.call(.put, "/users/bob", key: key, json: #"{"username": null, "fullName": null}"#)
            #expect(response.status == .badRequest)
            #expect(response["field"] as? String == "username")
        }
    }

    @Test(arguments: [
        ("limit=0", "invalid_input"), ("limit=1001", "invalid_input"), ("limit=ten", "invalid_input"), ("limit=+5", "invalid_input"),
        ("cursor=garbage", "invalid_cursor"), ("cursor=ZZZZZZZZZZZZZZZZZZZZZZZZ", "invalid_cursor"),
    ])
    func badPaginationParametersAreRefused(query: String, code: String) async throws {
        let server = try await TestServer.make()
        try await server.test { client in
            let response = try await client.call(.get, "/users?\(query)", key: server.key(server.acme, .development))
            #expect(response.status == .badRequest)
            #expect(response.code == code)
            if code == "invalid_input" { #expect(response["field"] as? String == "limit") }
        }
    }

    @Test func olderVersionsWorkInThePathAndTheHeader() async throws {
        let server = try await TestServer.make()
        try await server.test { client in
            let key = server.key(server.acme, .development)
            let id = try await client.createUser("versioned", key: key)
            for prefix in ["/2023-12", "/2024-03"] {
                let response = try await client.call(.get, "\(prefix)/users/\(id)", key: key)
                #expect(response.status == .ok)
                #expect(response.headers[.init("x-api-version")!] == String(prefix.dropFirst()))
            }
            let viaHeader = try await client.call(.get, "/users/\(id)", key: key, headers: [.init("x-api-version")!: "2024-03"])
            #expect(viaHeader.status == .ok)
            #expect(viaHeader.headers[.init("x-api-version")!] == "2024-03")
            let current = try await client.call(.get, "/users/\(id)", key: key)
            #expect(current.headers[.init("x-api-version")!] == "2025-09")
            let created = try await client.call(.post, "/2023-12/users/batch", key: key, json: #"[{"username":"old-sdk"}]"#)
            #expect(created.status == .ok)
        }
    }

    @Test(arguments: [
        ("/users", "1999-01", nil as String?),
        ("/2022-01/users", nil, nil),
        ("/2025-09/users", nil, nil),
        ("/2023-12/users", "2024-03", nil),
        ("/users", "latest", nil),
    ])
    func unknownOrConflictingVersionsAreRefused(path: String, header: String?, unused: String?) async throws {
        let server = try await TestServer.make()
        try await server.test { client in
            var headers: HTTPFields = [:]
            if let header { headers[.init("x-api-version")!] = header }
            let response = try await client.call(.get, path, key: server.key(server.acme, .development), headers: headers)
            #expect(response.status == .badRequest)
            #expect(response.code == "unsupported_api_version")
        }
    }

    @Test func requestIDsAreEchoedWhenSaneAndGeneratedOtherwise() async throws {
        let server = try await TestServer.make()
        try await server.test { client in
            let requestID = HTTPField.Name("x-request-id")!
            let echoed = try await client.call(.get, "/healthz", headers: [requestID: "trace-123.abc"])
            #expect(echoed.headers[requestID] == "trace-123.abc")
            let replaced = try await client.call(.get, "/healthz", headers: [requestID: "bad id\u{7f}<script>"])
            #expect(replaced.headers[requestID] != nil)
            #expect(replaced.headers[requestID] != "bad id\u{7f}<script>")
            let failed = try await client.call(.get, "/users", headers: [requestID: "req-42"])
            #expect(failed.headers[requestID] == "req-42")
            #expect(failed["requestId"] as? String == "req-42")
            // 128 characters are kept, 129 are not.
            let longest = String(repeating: "a", count: 128)
            #expect(try await client.call(.get, "/healthz", headers: [requestID: longest]).headers[requestID] == longest)
            let tooLong = longest + "a"
            let cut = try await client.call(.get, "/healthz", headers: [requestID: tooLong]).headers[requestID]
            #expect(cut != nil && cut != tooLong && cut != longest)
        }
    }

    @Test func egressAddressesComeFromConfigurationAndNeedNoKey() async throws {
        let server = try await TestServer.make()
        try await server.test { client in
            for path in ["/ip-addresses", "/2023-12/ip-addresses"] {
                let response = try await client.call(.get, path)
                #expect(response.status == .ok)
                #expect(response["egress"] as? [String] == ["203.0.113.10", "2001:db8::1"])
            }
        }
    }

    @Test func operationalEndpointsAnswer() async throws {
        let server = try await TestServer.make()
        try await server.test { client in
            #expect(try await client.call(.get, "/healthz")["status"] as? String == "ok")
            #expect(try await client.call(.get, "/readyz")["status"] as? String == "ready")
            let openAPI = try await client.call(.get, "/openapi.json")
            #expect(openAPI.status == .ok)
            #expect((openAPI["openapi"] as? String)?.hasPrefix("3.1") == true)
            let missing = try await client.call(.get, "/nowhere")
            #expect(missing.status == .notFound)
            #expect(missing.code == "route_not_found")
        }
    }

    @Test func metricsCountRequestsAndAuthenticationFailuresByCode() async throws {
        let server = try await TestServer.make()
        try await server.test { client in
            // The registry is shared by every suite running at once, so counts can only be compared as at least.
            func count(_ code: String) async throws -> Double {
                let text = try await client.call(.get, "/metrics").text
                let line = text.split(separator: "\n").first { $0.hasPrefix(#"keyway_auth_failures_total{code="\#(code)"}"#) }
                return line.flatMap { Double($0.split(separator: " ").last ?? "") } ?? 0
            }
            let before = try await count("malformed_api_key")
            for _ in 0..<3 { _ = try await client.call(.get, "/whoami", key: "kw_dev_tooShort") }
            #expect(try await count("malformed_api_key") >= before + 3)
            _ = try await client.call(.get, "/whoami")
            _ = try await client.call(.get, "/whoami", key: server.key(server.acme, .development))
            let metrics = try await client.call(.get, "/metrics")
            #expect(metrics.status == .ok)
            #expect(metrics.headers[.contentType]?.hasPrefix("text/plain") == true)
            #expect(metrics.text.contains(#"keyway_auth_failures_total{code="malformed_api_key"}"#))
            #expect(metrics.text.contains(#"keyway_auth_failures_total{code="missing_api_key"}"#))
            #expect(metrics.text.contains("hb_requests"))
            #expect(metrics.text.contains(#"http_route="/whoami""#))
            #expect(metrics.text.contains("http_server_request_duration"))
            #expect(!metrics.text.contains(server.key(server.acme, .development)))
        }
    }
}
