import Foundation
import HTTPTypes
import Hummingbird
import HummingbirdTesting
import KeywayCore
import KeywayHTTP
import Testing

/// User tokens for frontends: minting, `/me`, expiry, tampering, rotation, JWKS and CORS.
@Suite struct UserTokenTests {
    /// The JSON of a JWT part.
    static func part(_ token: String, _ index: Int) throws -> [String: Any] {
        var text = String(token.split(separator: ".", omittingEmptySubsequences: false)[index])
            .replacingOccurrences(of: "-", with: "+").replacingOccurrences(of: "_", with: "/")
        text += String(repeating: "=", count: (4 - text.count % 4) % 4)
        let data = try #require(Data(base64Encoded: text))
        return try #require(try JSONSerialization.jsonObject(with: data) as? [String: Any])
    }

    static func encode(_ object: [String: Any]) throws -> String {
        try JSONSerialization.data(withJSONObject: object).base64EncodedString()
            .replacingOccurrences(of: "+", with: "-").replacingOccurrences(of: "/", with: "_").replacingOccurrences(of: "=", with: "")
    }

    /// A token with one part replaced and the original signature kept.
    static func tampered(_ token: String, header: [String: Any]? = nil, payload: [String: Any]? = nil, signature: String? = nil) throws -> String {
        let parts = token.split(separator: ".", omittingEmptySubsequences: false).map(String.init)
        return [
            try header.map(encode) ?? parts[0], try payload.map(encode) ?? parts[1], signature ?? parts[2],
        ].joined(separator: ".")
    }

    func mint(_ client: some TestClientProtocol, key: String, user: String) async throws -> (token: String, expiresAt: String) {
        let response = try await client.call(.get, "/users/\(user)/token", key: key)
        try #require(response.status == .ok, "\(response.text)")
        return (try #require(response["token"] as? String), try #require(response["expiresAt"] as? String))
    }

    /// `keyway serve --port 0` without a public URL: tokens name the port actually bound, which
    /// is where clients reach it, not `:0`, and such tokens open `/me` there.
    @Test func onPortZeroTheIssuerIsTheURLWithTheBoundPort() async throws {
        var configuration = TestServer.defaultConfiguration
        configuration.publicURL = nil
        let server = try await TestServer.make(configuration: configuration)
        try await server.test(.live) { client in
            let port = try #require(client.port)
            #expect(port != 0)
            let key = server.key(server.acme, .development)
            _ = try await client.createUser("ada", key: key)
            let (token, _) = try await mint(client, key: key, user: "ada")
            #expect(try Self.part(token, 1)["iss"] as? String == "http://127.0.0.1:\(port)")
            #expect(try await client.call(.get, "/me", headers: [.authorization: "Bearer \(token)"]).status == .ok)
        }
    }

    @Test func aMintedTokenCarriesItsClaimsAndOpensMe() async throws {
        let server = try await TestServer.make()
        try await server.test { client in
            let key = server.key(server.acme, .development)
            let userID = try await client.createUser("ada", key: key, fullName: "Ada")
            let (token, expiresAt) = try await mint(client, key: key, user: "ada")

            let header = try Self.part(token, 0)
            #expect(header["alg"] as? String == "ES256")
            let kid = try #require(header["kid"] as? String)
            #expect(kid.hasPrefix("sk_"))
            let claims = try Self.part(token, 1)
            #expect(claims["iss"] as? String == "http://keyway.test")
            #expect(claims["sub"] as? String == userID)
            #expect((claims["aud"] as? String ?? (claims["aud"] as? [String])?.first) == "keyway:user")
            #expect(claims["env"] as? String == "development")
            #expect(claims["acct"] as? String == server.acme.id.rawValue)
            let issuedAt = try #require(claims["iat"] as? Double)
            let expiry = try #require(claims["exp"] as? Double)
            #expect(expiry - issuedAt == 1800, "30 minutes by default")
            #expect(abs(issuedAt - server.clock.now.timeIntervalSince1970) < 2)
            #expect((claims["jti"] as? String)?.isEmpty == false)
            #expect(try Date(expiresAt, strategy: .iso8601).timeIntervalSince1970 == expiry)

            let me = try await client.call(.get, "/me", headers: [.authorization: "Bearer \(token)"])
            #expect(me.status == .ok, "\(me.text)")
            #expect(me["userId"] as? String == userID)
            #expect(me["username"] as? String == "ada")
            #expect(me["fullName"] as? String == "Ada")

            let second = try await mint(client, key: key, user: userID).token
            #expect(try Self.part(second, 1)["jti"] as? String != claims["jti"] as? String, "every token has its own jti")
            #expect(try Self.part(second, 0)["kid"] as? String == kid, "one signing key per environment")
        }
    }

    @Test func expiryAndNotBeforeFollowTheClock() async throws {
        let server = try await TestServer.make()
        try await server.test { client in
            let key = server.key(server.acme, .production)
            _ = try await client.createUser("grace", key: key)
            let (token, _) = try await mint(client, key: key, user: "grace")
            let me = { try await client.call(.get, "/me", headers: [.authorization: "Bearer \(token)"]) }

            server.clock.advance(by: 29 * 60)
            #expect(try await me().status == .ok)
            server.clock.advance(by: 2 * 60)
            let expired = try await me()
            #expect(expired.status == .unauthorized)
            #expect(expired.code == "token_expired")
            #expect(expired.headers[.wwwAuthenticate] == #"Bearer realm="keyway", error="invalid_token""#)

            server.clock.advance(by: -31 * 60 - 60)  // a minute before the token was issued
            let early = try await me()
            #expect(early.code == "token_not_yet_valid")
        }
    }

    @Test func tamperedTokensAreRefusedWithTheirReason() async throws {
        let server = try await TestServer.make()
        try await server.test { client in
            let development = server.key(server.acme, .development)
            let production = server.key(server.acme, .production)
            let victim = try await client.createUser("victim", key: development)
            _ = try await client.createUser("mallory", key: development)
            _ = try await client.createUser("mallory", key: production)
            let (token, _) = try await mint(client, key: development, user: "mallory")
            let (productionToken, _) = try await mint(client, key: production, user: "mallory")
            var claims = try Self.part(token, 1)
            var header = try Self.part(token, 0)

            var cases: [(String, String)] = []
            claims["sub"] = victim
            cases.append((try Self.tampered(token, payload: claims), "invalid_token_signature"))
            claims = try Self.part(productionToken, 1)
            cases.append((try Self.tampered(token, payload: claims), "invalid_token_signature"))  // claims of production, dev signature
            header["kid"] = try Self.part(productionToken, 0)["kid"]
            cases.append((try Self.tampered(token, header: header), "invalid_token_signature"))  // signed by the other environment's key
            cases.append((try Self.tampered(token, header: ["alg": "HS256", "typ": "JWT", "kid": header["kid"]!]), "unsupported_token_algorithm"))
            cases.append((try Self.tampered(token, header: ["alg": "none", "typ": "JWT"], signature: ""), "unsupported_token_algorithm"))
            cases.append(
                (try Self.tampered(token, header: ["alg": "ES256", "typ": "JWT", "kid": "sk_AAAAAAAAAAAAAAAAAAAA"]), "invalid_token_signature")
            )
            cases.append(("not.a.token", "malformed_user_token"))
            cases.append(("eyJhbGciOiJFUzI1NiJ9", "malformed_user_token"))

            for (forged, code) in cases {
                let response = try await client.call(.get, "/me", headers: [.authorization: "Bearer \(forged)"])
                #expect(response.status == .unauthorized, "\(code): \(response.text)")
                #expect(response.code == code)
            }
        }
    }

    @Test func aTokenFromAnotherIssuerIsRefused() async throws {
        let server = try await TestServer.make()
        try await server.test { client in
            let key = server.key(server.acme, .development)
            let id = try await client.createUser("ivy", key: key)
            let user = try #require(try await server.store.user(id, in: .init(accountID: server.acme.id, environment: .development)))
            let elsewhere = UserTokens(
                store: server.store,
                masterKey: try MasterKey(bytes: Array(repeating: UInt8(7), count: 32)),
                issuer: "https://other.example"
            )
            let (token, _) = try await elsewhere.mint(for: user, in: .init(accountID: server.acme.id, environment: .development))
            let response = try await client.call(.get, "/me", headers: [.authorization: "Bearer \(token)"])
            #expect(response.code == "invalid_token_issuer")
        }
    }

    @Test func secretKeysAndUserTokensStayOnTheirOwnSide() async throws {
        let server = try await TestServer.make()
        try await server.test { client in
            let key = server.key(server.acme, .development)
            _ = try await client.createUser("sam", key: key)
            let (token, _) = try await mint(client, key: key, user: "sam")

            let keyOnMe = try await client.call(.get, "/me", key: key)
            #expect(keyOnMe.status == .unauthorized)
            #expect(keyOnMe.code == "secret_key_not_accepted")
            #expect(keyOnMe.message?.contains("/users/{id}/token") == true)
            #expect(!keyOnMe.text.contains(key))

            for path in ["/users", "/whoami", "/users/sam", "/users/sam/token"] {
                let tokenOnAPI = try await client.call(.get, path, key: token)
                #expect(tokenOnAPI.status == .unauthorized)
                #expect(tokenOnAPI.code == "user_token_not_accepted", "\(path)")
            }
            let nothing = try await client.call(.get, "/me")
            #expect(nothing.code == "missing_user_token")
            #expect(nothing.headers[.wwwAuthenticate] == #"Bearer realm="keyway""#)
        }
    }

    @Test func aDeletedUsersTokenStopsWorking() async throws {
        let server = try await TestServer.make()
        try await server.test { client in
            let key = server.key(server.globex, .development)
            _ = try await client.createUser("leaver", key: key)
            let (token, _) = try await mint(client, key: key, user: "leaver")
            #expect(try await client.call(.get, "/me", headers: [.authorization: "Bearer \(token)"]).status == .ok)
            #expect(try await client.call(.delete, "/users/leaver", key: key).status == .ok)
            let after = try await client.call(.get, "/me", headers: [.authorization: "Bearer \(token)"])
            #expect(after.status == .unauthorized)
            #expect(after.code == "token_user_deleted")
        }
    }

    @Test func aTokensSubjectIsAUserIdentifierNeverAUsername() async throws {
        let server = try await TestServer.make()
        try await server.test { client in
            let key = server.key(server.globex, .development)
            let leaverID = try await client.createUser("leaver", key: key)
            let (token, _) = try await mint(client, key: key, user: leaverID)
            #expect(try await client.call(.delete, "/users/\(leaverID)", key: key).status == .ok)
            // Once the user is gone its identifier is free as a username; the token must not follow it.
            _ = try await client.createUser(leaverID, key: key)
            let after = try await client.call(.get, "/me", headers: [.authorization: "Bearer \(token)"])
            #expect(after.status == .unauthorized)
            #expect(after.code == "token_user_deleted")
        }
    }

    @Test func mintingForAnUnknownUserIsA404WithTheUsualHint() async throws {
        let server = try await TestServer.make()
        try await server.test { client in
            let id = try await client.createUser("prod-only", key: server.key(server.acme, .production))
            let response = try await client.call(.get, "/users/\(id)/token", key: server.key(server.acme, .development))
            #expect(response.status == .notFound)
            #expect(response["otherEnvironment"] as? String == "production")
        }
    }

    @Test func rotationKeepsOldTokensUntilTheyExpireAndTheJWKSFollows() async throws {
        let server = try await TestServer.make()
        let environment = EnvironmentID(accountID: server.acme.id, environment: .development)
        try await server.test { client in
            let key = server.key(server.acme, .development)
            _ = try await client.createUser("rita", key: key)
            let jwksPath = "/.well-known/jwks.json?account=\(server.acme.id.rawValue)&environment=development"
            let (before, _) = try await mint(client, key: key, user: "rita")
            let oldKid = try #require(try Self.part(before, 0)["kid"] as? String)

            try await server.userTokens.rotate(environment)
            let (after, _) = try await mint(client, key: key, user: "rita")
            let newKid = try #require(try Self.part(after, 0)["kid"] as? String)
            #expect(newKid != oldKid)
            for token in [before, after] {
                #expect(try await client.call(.get, "/me", headers: [.authorization: "Bearer \(token)"]).status == .ok)
            }
            let both = try await client.call(.get, jwksPath)
            #expect(both.headers[.accessControlAllowOrigin] == "*", "the JWKS is public: any origin may read it")
            let kids = (both["keys"] as? [[String: Any]])?.compactMap { $0["kid"] as? String }
            #expect(Set(kids ?? []) == [oldKid, newKid])
            let jwk = try #require((both["keys"] as? [[String: String]])?.first)
            #expect(jwk["kty"] == "EC" && jwk["crv"] == "P-256" && jwk["alg"] == "ES256" && jwk["use"] == "sig")
            #expect(jwk["x"]?.count == 43 && jwk["y"]?.count == 43)
            #expect(jwk["d"] == nil, "no private part is published")

            server.clock.advance(by: 3601 + UserTokens.leeway)
            let later = try await client.call(.get, jwksPath)
            #expect((later["keys"] as? [[String: Any]])?.compactMap { $0["kid"] as? String } == [newKid])
            #expect(try await client.call(.get, "/me", headers: [.authorization: "Bearer \(before)"]).code == "token_expired")

            // Another account's or environment's JWKS never lists these keys.
            let other = try await client.call(.get, "/.well-known/jwks.json?account=\(server.globex.id.rawValue)&environment=development")
            #expect((other["keys"] as? [Any])?.isEmpty == true)
            #expect(try await client.call(.get, "/.well-known/jwks.json").status == .badRequest)
        }
    }

    @Test func corsIsOfferedOnlyToTheEnvironmentsOriginsAndNeverOnSecretKeyEndpoints() async throws {
        let server = try await TestServer.make()
        let development = EnvironmentID(accountID: server.acme.id, environment: .development)
        try await server.store.setAllowedOrigins(try origins("https://app.acme.test", "http://localhost:3000"), for: development, audit: .system)
        try await server.test { client in
            let devKey = server.key(server.acme, .development)
            let prodKey = server.key(server.acme, .production)
            _ = try await client.createUser("cora", key: devKey)
            _ = try await client.createUser("cora", key: prodKey)
            let (devToken, _) = try await mint(client, key: devKey, user: "cora")
            let (prodToken, _) = try await mint(client, key: prodKey, user: "cora")
            let allowed = "https://app.acme.test"

            let preflight = try await client.execute(
                uri: "/me",
                method: .options,
                headers: [.origin: allowed, .accessControlRequestMethod: "GET", .accessControlRequestHeaders: "authorization"]
            ) { $0 }
            #expect(preflight.status == .noContent)
            #expect(preflight.headers[.accessControlAllowOrigin] == allowed)
            #expect(preflight.headers[.accessControlAllowHeaders] == "Authorization")
            let stranger = try await client.execute(uri: "/me", method: .options, headers: [.origin: "https://evil.example"]) { $0 }
            #expect(stranger.headers[.accessControlAllowOrigin] == nil)

            let devMe = try await client.call(.get, "/me", headers: [.authorization: "Bearer \(devToken)", .origin: allowed])
            #expect(devMe.status == .ok)
            #expect(devMe.headers[.accessControlAllowOrigin] == allowed)
            #expect(devMe.headers[.vary] == "Origin")
            let prodMe = try await client.call(.get, "/me", headers: [.authorization: "Bearer \(prodToken)", .origin: allowed])
            #expect(prodMe.status == .ok)
            #expect(prodMe.headers[.accessControlAllowOrigin] == nil, "production allows no origin")

            for (method, path) in [(HTTPRequest.Method.get, "/users"), (.get, "/users/cora/token"), (.options, "/users"), (.get, "/whoami")] {
                let response = try await client.execute(
                    uri: path,
                    method: method,
                    headers: [.authorization: "Bearer \(devKey)", .origin: allowed, .accessControlRequestMethod: "GET"]
                ) { $0 }
                #expect(response.headers[.accessControlAllowOrigin] == nil, "\(method) \(path) offers CORS")
            }
        }
    }
}
