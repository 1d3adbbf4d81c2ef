import Foundation
import KeywayCore
import Testing

/// Rows the store cannot read as they are, on every store.
extension StoreConformanceTests {
    // MARK: Corrupt rows

    @Test(arguments: StoreKind.allCases)
    func aRowWhoseEnvironmentIsUnknownFailsToReadRatherThanBecomingDevelopment(kind: StoreKind) async throws {
        let (store, account) = try await kind.makeStoreWithAccount()
        let production = EnvironmentID(accountID: account.id, environment: .production)
        let key = GeneratedSecretKey.generate(for: .production)
        _ = try await store.insertKeyRevokingPrevious(key, for: production, createdBy: "t", at: Date())
        let signingKey = SigningKeyRecord(
            id: "sk_corrupt",
            environmentID: production,
            publicKey: Data([1]),
            sealedPrivateKey: Data([2]),
            createdAt: Date().keywayPrecision,
            retiredAt: nil
        )
        _ = try await store.insertSigningKey(signingKey, retiringActive: false, audit: .system)

        try await kind.writeUnchecked(
            [
                "UPDATE secret_keys SET environment = 'staging' WHERE account_id = '\(account.id.rawValue)'",
                "UPDATE signing_keys SET environment = 'staging' WHERE account_id = '\(account.id.rawValue)'",
            ],
            to: store
        )

        // The request path's lookup by digest, the listing, and a signing key by id.
        await #expect(throws: (any Error).self) { try await store.secretKey(digest: key.digest) }
        await #expect(throws: (any Error).self) { try await store.secretKeys(for: account.id) }
        await #expect(throws: (any Error).self) { try await store.signingKey(id: signingKey.id) }
    }
}
