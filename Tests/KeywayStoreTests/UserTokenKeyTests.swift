import Crypto
import Foundation
import JWTKit
import Logging
import Testing

@testable import KeywayCore

/// Signing keys at rest and the claims only Keyway's own keys can produce.
@Suite struct UserTokenKeyTests {
    static let masterKey = try! MasterKey(bytes: Array(repeating: UInt8(3), count: 32))

    func fixture(_ kind: StoreKind) async throws -> (any KeywayStore, UserTokens, User, EnvironmentID) {
        let (store, account) = try await kind.makeStoreWithAccount()
        let environment = EnvironmentID(accountID: account.id, environment: .development)
        let user = try await store.createUser(try NewUser(username: "u", fullName: nil), in: environment, at: Date())
        return (store, UserTokens(store: store, masterKey: Self.masterKey, issuer: "http://keyway.test"), user, environment)
    }

    @Test(arguments: StoreKind.allCases)
    func signingKeysAreCreatedOnFirstUseAndSealedAtRest(kind: StoreKind) async throws {
        let (store, tokens, user, environment) = try await fixture(kind)
        #expect(try await store.signingKeys(for: environment).isEmpty)
        _ = try await tokens.mint(for: user, in: environment)
        let records = try await store.signingKeys(for: environment)
        let record = try #require(records.first)
        #expect(records.count == 1)
        #expect(record.retiredAt == nil)
        #expect(record.sealedPrivateKey.count == 12 + 32 + 16, "nonce, ciphertext and tag")
        let opened = try Self.masterKey.unseal(
            record.sealedPrivateKey,
            context: "keyway-signing-key:\(record.id):\(environment.accountID):development"
        )
        let privateKey = try P256.Signing.PrivateKey(rawRepresentation: opened)
        #expect(privateKey.publicKey.x963Representation == record.publicKey)
        #expect(record.sealedPrivateKey.range(of: opened) == nil, "the private key is not stored in clear")
        let wrongKey = try MasterKey(bytes: Array(repeating: UInt8(4), count: 32))
        #expect(throws: (any Error).self) {
            try wrongKey.unseal(record.sealedPrivateKey, context: "keyway-signing-key:\(record.id):\(environment.accountID):development")
        }
        #expect(throws: (any Error).self) {
            try Self.masterKey.unseal(record.sealedPrivateKey, context: "keyway-signing-key:\(record.id):\(environment.accountID):production")
        }
    }

    @Test(arguments: StoreKind.allCases)
    func racingFirstUsesShareOneSigningKey(kind: StoreKind) async throws {
        let (store, tokens, user, environment) = try await fixture(kind)
        let other = UserTokens(store: store, masterKey: Self.masterKey, issuer: "http://keyway.test")
        try await withThrowingTaskGroup(of: Void.self) { group in
            for index in 0..<8 {
                group.addTask { _ = try await (index.isMultiple(of: 2) ? tokens : other).mint(for: user, in: environment) }
            }
            try await group.waitForAll()
        }
        #expect(try await store.signingKeys(for: environment).filter { $0.retiredAt == nil }.count == 1)
    }

    @Test(arguments: StoreKind.allCases)
    func aTokenForAnotherAudienceIsRefused(kind: StoreKind) async throws {
        let (store, tokens, user, environment) = try await fixture(kind)
        _ = try await tokens.mint(for: user, in: environment)
        let record = try #require(try await store.signingKeys(for: environment).first)
        let now = Date()
        let claims = UserTokenClaims(
            iss: IssuerClaim(value: "http://keyway.test"),
            sub: SubjectClaim(value: user.id.rawValue),
            aud: AudienceClaim(value: "some-other-api"),
            env: "development",
            acct: environment.accountID.rawValue,
            iat: IssuedAtClaim(value: now),
            nbf: NotBeforeClaim(value: now),
            exp: ExpirationClaim(value: now.addingTimeInterval(600)),
            jti: IDClaim(value: "x")
        )
        let token = try await tokens.signer(for: record).sign(claims, kid: JWKIdentifier(string: record.id))
        let error = await #expect(throws: KeywayError.self) { try await tokens.verify(token) }
        #expect(error?.code == .invalidTokenAudience)
    }

    @Test func theMasterKeyFileIsCreatedPrivatelyOnceAndReadAfter() throws {
        let folder = FileManager.default.temporaryDirectory.appendingPathComponent("keyway-master-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: folder, withIntermediateDirectories: true)
        let path = folder.appendingPathComponent("master.key").path
        let first = try MasterKey.loadOrCreate(file: path, logger: Logger(label: "test"))
        let attributes = try FileManager.default.attributesOfItem(atPath: path)
        #expect((attributes[.posixPermissions] as? NSNumber)?.intValue == 0o600)
        let second = try MasterKey.loadOrCreate(file: path, logger: Logger(label: "test"))
        let sealed = try first.seal(Data("secret".utf8), context: "c")
        #expect(try second.unseal(sealed, context: "c") == Data("secret".utf8))
        #expect(throws: ConfigurationProblem.self) { try MasterKey(base64: "dG9vIHNob3J0") }
    }
}
