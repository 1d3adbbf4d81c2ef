import Foundation
import KeywayCore
import Testing

/// The service-token service on every store: verification from memory and revocation's bound.
@Suite struct ServiceTokensTests {
    @Test(arguments: StoreKind.allCases)
    func aCreatedTokenAuthenticatesFromMemoryAfterItsFirstUse(kind: StoreKind) async throws {
        let store = CountingStore(try await kind.makeStore())
        let tokens = ServiceTokens(store: store)
        try await tokens.refresh()
        let (token, record) = try await tokens.create(name: "gateway")
        #expect(try await tokens.authenticate(Substring(token.revealPlaintext())) == record)
        let lookups = store.serviceTokenLookups
        for _ in 0..<5 { _ = try await tokens.authenticate(Substring(token.revealPlaintext())) }
        #expect(store.serviceTokenLookups == lookups)
        #expect(token.description == token.hint && !token.hint.contains(token.revealPlaintext().dropLast(4)))
    }

    @Test(arguments: StoreKind.allCases)
    func aTokenRevokedByAnotherProcessIsRefusedAfterTheNextRefresh(kind: StoreKind) async throws {
        let stores = try await kind.makeSharedStores(2)
        let server = ServiceTokens(store: stores[0])
        let cli = ServiceTokens(store: stores[1])
        try await server.refresh()
        let (token, _) = try await cli.create(name: "gateway")
        // Created after the server's refresh: found by one lookup, then kept.
        _ = try await server.authenticate(Substring(token.revealPlaintext()))
        _ = try #require(try await cli.revoke(.name("gateway")))
        try await server.refresh()
        let error = await #expect(throws: KeywayError.self) { try await server.authenticate(Substring(token.revealPlaintext())) }
        #expect(error?.code == .revokedServiceToken)
        #expect(error?.details["revokedAt"] != nil)
    }

    @Test(arguments: StoreKind.allCases)
    func revokingInThisProcessRefusesTheTokenBeforeReturning(kind: StoreKind) async throws {
        let tokens = ServiceTokens(store: try await kind.makeStore())
        let (token, _) = try await tokens.create(name: "gateway")
        _ = try await tokens.authenticate(Substring(token.revealPlaintext()))
        _ = try #require(try await tokens.revoke(.name("gateway")))
        let error = await #expect(throws: KeywayError.self) { try await tokens.authenticate(Substring(token.revealPlaintext())) }
        #expect(error?.code == .revokedServiceToken)
    }

    @Test func accountKeysAndInventionsAreRefusedWithoutALookup() async throws {
        let store = CountingStore(try await StoreKind.sqlite.makeStore())
        let tokens = ServiceTokens(store: store)
        let key = GeneratedSecretKey.generate(for: .production).revealPlaintext()
        let notAccepted = await #expect(throws: KeywayError.self) { try await tokens.authenticate(Substring(key)) }
        #expect(notAccepted?.code == .apiKeyNotAccepted)
        // The checksum's last character changed, never to itself (one time in 62 it was "0" already).
        let generated = GeneratedServiceToken.generate().revealPlaintext()
        let mistyped = String(generated.dropLast()) + (generated.last == "0" ? "1" : "0")
        for invalid in ["", "kwst_", mistyped, "kwst_" + String(repeating: "A", count: 36)] {
            let error = await #expect(throws: KeywayError.self) { try await tokens.authenticate(Substring(invalid)) }
            #expect(error?.code == .invalidServiceToken)
        }
        #expect(store.serviceTokenLookups == 0)
        // A well-formed unknown token costs one lookup, then none until the next refresh.
        let unknown = GeneratedServiceToken.generate().revealPlaintext()
        for _ in 0..<3 { await #expect(throws: KeywayError.self) { try await tokens.authenticate(Substring(unknown)) } }
        #expect(store.serviceTokenLookups == 1)
    }

    @Test func namesAreChecked() async throws {
        let tokens = ServiceTokens(store: try await StoreKind.sqlite.makeStore())
        for name in ["", "has space", String(repeating: "a", count: 65), "ünïcode"] {
            let error = await #expect(throws: KeywayError.self) { try await tokens.create(name: name) }
            #expect(error?.code == .invalidInput)
        }
        #expect(try await tokens.create(name: "edge.gateway_01-a").record.name == "edge.gateway_01-a")
    }
}
