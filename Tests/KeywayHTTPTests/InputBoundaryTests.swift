import Foundation
import HTTPTypes
import Hummingbird
import HummingbirdTesting
import KeywayCore
import Testing

@testable import KeywayHTTP

/// What reaches the server from outside, refused or answered the way the OpenAPI document says.
@Suite struct InputBoundaryTests {
    @Test(arguments: [
        "/.well-known/jwks.json?account=a%00b&environment=development",
        "/users/a%00b",
        "/users?cursor=%00",
        "/whoami?x=%2500%00",
        "/dashboard/signin?next=%00",
    ])
    func aNULInThePathOrQueryIsRefused(uri: String) async throws {
        let server = try await TestServer.make()
        try await server.test { client in
            let response = try await client.call(.get, uri, key: server.key(server.acme, .development))
            #expect(response.status == .badRequest, "\(uri): \(response.text)")
            #expect(response.code == "invalid_input")
        }
    }

    @Test func holdsNULFindsEveryEncodingOfIt() {
        #expect(NULRefusalMiddleware<KeywayRequestContext>.holdsNUL("/a%00"))
        #expect(NULRefusalMiddleware<KeywayRequestContext>.holdsNUL("/a?b=%%00"))
        #expect(NULRefusalMiddleware<KeywayRequestContext>.holdsNUL("/a\u{0}"))
        #expect(!NULRefusalMiddleware<KeywayRequestContext>.holdsNUL("/a%2500?b=%0A0&c=%100"))
    }

    @Test func aNULInADashboardFormIsRefused() async throws {
        let server = try await TestServer.make()
        try await server.test { client in
            let browser = TestBrowser(client)
            try await browser.get("/dashboard/signin")
            let page = try await browser.post("/dashboard/signin", ["email": "owner@acme.test\u{0}", "password": "x"])
            #expect(page.status == .badRequest)
            #expect(page.html.contains("NUL"))
        }
    }

    @Test func aKnownPathAskedWithAnotherMethodIs405WithAllow() async throws {
        let server = try await TestServer.make()
        try await server.test { client in
            let key = server.key(server.acme, .development)
            for (method, uri, allow) in [
                (HTTPRequest.Method.trace, "/healthz", "GET"), (.delete, "/users", "GET, POST"), (.patch, "/users/abc", "DELETE, GET, PUT"),
                (.post, "/2023-12/whoami", "GET"), (.put, "/me", "GET, OPTIONS"),
            ] {
                let response = try await client.call(method, uri, key: key)
                #expect(response.status == .methodNotAllowed, "\(method) \(uri): \(response.text)")
                #expect(response.headers[.allow] == allow, "\(method) \(uri)")
                #expect(response.code == "method_not_allowed")
            }
            let unknown = try await client.call(.get, "/nowhere", key: key)
            #expect(unknown.status == .notFound)
            #expect(unknown.headers[.allow] == nil)
        }
    }

    @Test func anAPIVersionHeaderMustNameAVersionExactly() async throws {
        let server = try await TestServer.make()
        try await server.test { client in
            let key = server.key(server.acme, .development)
            for value in ["", "2023-12x", "latest"] {
                let response = try await client.call(.get, "/whoami", key: key, headers: [.xAPIVersion: value])
                #expect(response.status == .badRequest, "x-api-version '\(value)'")
                #expect(response.code == "unsupported_api_version")
            }
            #expect(try await client.call(.get, "/whoami", key: key, headers: [.xAPIVersion: "2023-12"]).status == .ok)
        }
    }

    @Test func responsesWithUserDataOrTokensAreNeverStored() async throws {
        let server = try await TestServer.make()
        try await server.test { client in
            let key = server.key(server.acme, .development)
            let id = try await client.createUser("ada", key: key)
            for uri in ["/whoami", "/users", "/users/\(id)", "/2023-12/users/ada", "/users/\(id)/token"] {
                let response = try await client.call(.get, uri, key: key)
                #expect(response.status == .ok)
                #expect(response.headers[.cacheControl] == "no-store", "\(uri)")
                #expect(response.headers[.pragma] == "no-cache", "\(uri)")
            }
            let token = try #require(try await client.call(.get, "/users/\(id)/token", key: key)["token"] as? String)
            let me = try await client.call(.get, "/me", headers: [.authorization: "Bearer \(token)"])
            #expect(me.status == .ok)
            #expect(me.headers[.cacheControl] == "no-store")
            #expect(try await client.call(.get, "/ip-addresses").headers[.cacheControl] != "no-store", "public data may be cached")
        }
    }

    @Test func theBatchLimitIsCheckedBeforeTheBodyIsDecoded() async throws {
        let server = try await TestServer.make()
        try await server.test { client in
            // Not JSON past the 1 001st entry: only a check made while reading can tell it is too long.
            let entries = String(repeating: #"{"username": "x"},"#, count: 1001)
            let response = try await client.call(.post, "/users/batch", key: server.key(server.acme, .development), json: "[\(entries) garbage")
            #expect(response.status == .badRequest)
            #expect(response.code == "batch_too_large")
        }
    }

    @Test(arguments: [
        (#"{"username": "a\u0000b"}"#, "username"), (#"{"username": "ab", "fullName": "x\u0000"}"#, "fullName"),
        (#"{"username": "\#(String(repeating: " ", count: 250))abcdef"}"#, "username"),
    ])
    func whatTheUsernamePatternRefusesIsRefused(json: String, field: String) async throws {
        let server = try await TestServer.make()
        try await server.test { client in
            let response = try await client.call(.post, "/users", key: server.key(server.acme, .development), json: json)
            #expect(response.status == .badRequest, "\(json): \(response.text)")
            #expect(response["field"] as? String == field)
        }
    }
}
