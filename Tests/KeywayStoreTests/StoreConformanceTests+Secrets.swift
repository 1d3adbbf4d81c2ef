import Foundation
import KeywayCore
import Testing

/// What the store must never keep, on every store.
extension StoreConformanceTests {
    /// The plaintext of a key exists once, in the response that generated it: the store keeps
    /// its digest and its hint, never the key or the random part that makes it secret.
    @Test(arguments: StoreKind.allCases)
    func noKeyPlaintextIsStored(kind: StoreKind) async throws {
        let (store, account) = try await kind.makeStoreWithAccount()
        var secrets: [String] = []
        for environment in Environment.allCases {
            for _ in 0..<2 {
                let key = GeneratedSecretKey.generate(for: environment)
                _ = try await store.insertKeyRevokingPrevious(
                    key,
                    for: EnvironmentID(accountID: account.id, environment: environment),
                    createdBy: "t",
                    at: Date()
                )
                secrets.append(key.revealPlaintext())
            }
        }
        let stored = try await kind.everythingStored(in: store)
        #expect(stored.contains(account.id.rawValue), "the dump reads the tables")
        for secret in secrets {
            // The random part without its prefix and last four characters (which the hint shows).
            let random = String(secret.dropFirst(secret.hasPrefix("kw_dev_") ? 7 : 8).dropLast(4))
            let hex = random.utf8.map { String(format: "%02x", $0) }.joined()
            // Booleans, so a failure names what leaked without printing the key or the dump.
            let storedWhole = stored.contains(secret)
            let storedRandomPart = stored.contains(random)
            let storedAsBytes = stored.lowercased().contains(hex)
            #expect(!storedWhole, "a key is stored")
            #expect(!storedRandomPart, "a key's secret part is stored")
            #expect(!storedAsBytes, "a key's secret part is stored as bytes")
        }
    }
}
