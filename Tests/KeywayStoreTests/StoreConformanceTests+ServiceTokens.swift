import Foundation
import KeywayCore
import Testing

/// Service tokens, on every store.
extension StoreConformanceTests {
    static func serviceToken(_ name: String, at seconds: TimeInterval = 1_000) -> (GeneratedServiceToken, ServiceTokenRecord) {
        let token = GeneratedServiceToken.generate()
        let record = ServiceTokenRecord(
            id: .generate(),
            name: name,
            digest: token.digest,
            hint: token.hint,
            createdAt: Date(timeIntervalSince1970: seconds),
            revokedAt: nil
        )
        return (token, record)
    }

    @Test(arguments: StoreKind.allCases)
    func serviceTokensAreStoredFoundByDigestAndListedNewestFirst(kind: StoreKind) async throws {
        let store = try await kind.makeStore()
        let (_, first) = Self.serviceToken("gateway", at: 1_000)
        let (_, second) = Self.serviceToken("billing", at: 2_000)
        #expect(try await store.insertServiceToken(first, audit: .system) == first)
        _ = try await store.insertServiceToken(second, audit: .system)
        #expect(try await store.serviceToken(digest: first.digest) == first)
        #expect(try await store.serviceToken(digest: GeneratedServiceToken.generate().digest) == nil)
        #expect(try await store.serviceTokens() == [second, first])
    }

    @Test(arguments: StoreKind.allCases)
    func anActiveServiceTokenNameIsUniqueUntilItIsRevoked(kind: StoreKind) async throws {
        let store = try await kind.makeStore()
        let (_, first) = Self.serviceToken("gateway")
        _ = try await store.insertServiceToken(first, audit: .system)
        let error = await #expect(throws: KeywayError.self) { try await store.insertServiceToken(Self.serviceToken("gateway").1, audit: .system) }
        #expect(error?.code == .serviceTokenNameTaken)
        _ = try #require(try await store.revokeServiceToken(.name("gateway"), at: Date(timeIntervalSince1970: 3_000), audit: .system))
        let (_, again) = Self.serviceToken("gateway", at: 4_000)
        #expect(try await store.insertServiceToken(again, audit: .system) == again)
    }

    @Test(arguments: StoreKind.allCases)
    func revokingAServiceTokenByNameOrIdKeepsItAsRevoked(kind: StoreKind) async throws {
        let store = try await kind.makeStore()
        let (_, byName) = Self.serviceToken("gateway")
        let (_, byID) = Self.serviceToken("billing")
        _ = try await store.insertServiceToken(byName, audit: .system)
        _ = try await store.insertServiceToken(byID, audit: .system)
        let at = Date(timeIntervalSince1970: 5_000)

        // A name is never read as an id, nor an id as a name.
        #expect(try await store.revokeServiceToken(.name(byID.id.rawValue), at: at, audit: .system) == nil)
        #expect(try await store.revokeServiceToken(.id(ServiceTokenID(rawValue: "gateway")), at: at, audit: .system) == nil)
        let revoked = try #require(try await store.revokeServiceToken(.name("gateway"), at: at, audit: .system))
        #expect(revoked.id == byName.id && revoked.revokedAt == at)
        #expect(try await store.serviceToken(digest: byName.digest)?.revokedAt == at)
        #expect(try await store.revokeServiceToken(.id(byID.id), at: at, audit: .system)?.id == byID.id)
        // Revoked already, or never there: nothing to revoke.
        #expect(try await store.revokeServiceToken(.name("gateway"), at: at, audit: .system) == nil)
        #expect(try await store.revokeServiceToken(.name("nobody"), at: at, audit: .system) == nil)
        #expect(try await store.serviceTokens().allSatisfy { $0.revokedAt == at })
    }

    @Test(arguments: StoreKind.allCases)
    func noServiceTokenPlaintextIsStored(kind: StoreKind) async throws {
        let store = try await kind.makeStore()
        let (token, record) = Self.serviceToken("gateway")
        _ = try await store.insertServiceToken(record, audit: .system)
        let stored = try await kind.everythingStored(in: store)
        #expect(stored.contains("gateway"), "the dump reads the tables")
        let secret = token.revealPlaintext()
        let random = String(secret.dropFirst(ServiceTokenFormat.prefix.count).dropLast(4))
        let storedWhole = stored.contains(secret)
        let storedRandomPart = stored.contains(random)
        #expect(!storedWhole, "a service token is stored")
        #expect(!storedRandomPart, "a service token's secret part is stored")
    }
}
