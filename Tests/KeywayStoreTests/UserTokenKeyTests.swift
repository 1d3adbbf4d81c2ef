import Crypto
import Foundation
import JWTKit
import Logging
import Synchronization
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
        let token = try await forge(
            tokens,
            with: record,
            for: user,
            in: environment,
            audience: "some-other-api",
            issuedAt: now,
            expiresAt: now.addingTimeInterval(600)
        )
        let error = await #expect(throws: KeywayError.self) { try await tokens.verify(token) }
        #expect(error?.code == .invalidTokenAudience)
    }

    /// A token validly signed by the development key but claiming production (or another
    /// account) must not pass: the signature is right, only the claim check can refuse it.
    @Test(arguments: StoreKind.allCases)
    func aTokenSignedByOneEnvironmentsKeyCannotClaimAnother(kind: StoreKind) async throws {
        let (store, tokens, user, environment) = try await fixture(kind)
        _ = try await tokens.mint(for: user, in: environment)
        let record = try #require(try await store.signingKeys(for: environment).first)
        let now = Date()
        let other = try await store.createAccount(name: "Other", at: now)
        for claimed in [environment.sibling, EnvironmentID(accountID: other.id, environment: environment.environment)] {
            let token = try await forge(tokens, with: record, for: user, in: claimed, issuedAt: now, expiresAt: now.addingTimeInterval(600))
            let error = await #expect(throws: KeywayError.self) { try await tokens.verify(token) }
            #expect(error?.code == .invalidTokenSignature, "claiming \(claimed)")
        }
        let honest = try await forge(tokens, with: record, for: user, in: environment, issuedAt: now, expiresAt: now.addingTimeInterval(600))
        #expect(try await tokens.verify(honest).environmentID == environment)
    }

    /// A token as only the holder of a signing key's private key could make it.
    func forge(
        _ tokens: UserTokens,
        with record: SigningKeyRecord,
        for user: User,
        in environment: EnvironmentID,
        audience: String = UserTokens.audience,
        issuedAt: Date,
        expiresAt: Date
    ) async throws -> String {
        let claims = UserTokenClaims(
            iss: IssuerClaim(value: "http://keyway.test"),
            sub: SubjectClaim(value: user.id.rawValue),
            aud: AudienceClaim(value: audience),
            env: environment.environment.rawValue,
            acct: environment.accountID.rawValue,
            iat: IssuedAtClaim(value: issuedAt),
            nbf: NotBeforeClaim(value: issuedAt),
            exp: ExpirationClaim(value: expiresAt),
            jti: IDClaim(value: "forged")
        )
        return try await tokens.signer(for: record).sign(claims, kid: JWKIdentifier(string: record.id))
    }

    @Test(arguments: StoreKind.allCases)
    func aTokenThatLivesLongerThanTheMaximumOrIsDatedAheadIsRefused(kind: StoreKind) async throws {
        let (store, tokens, user, environment) = try await fixture(kind)
        _ = try await tokens.mint(for: user, in: environment)
        let record = try #require(try await store.signingKeys(for: environment).first)
        let now = Date()

        let longLived = try await forge(tokens, with: record, for: user, in: environment, issuedAt: now, expiresAt: now.addingTimeInterval(86_400))
        let error = await #expect(throws: KeywayError.self) { try await tokens.verify(longLived) }
        #expect(error?.code == .malformedUserToken)

        // Within the lifetime, but dated an hour ahead: it would work for two hours.
        let ahead = try await forge(
            tokens,
            with: record,
            for: user,
            in: environment,
            issuedAt: now.addingTimeInterval(3000),
            expiresAt: now.addingTimeInterval(3000 + 3600)
        )
        let aheadError = await #expect(throws: KeywayError.self) { try await tokens.verify(ahead) }
        #expect(aheadError?.code == .tokenNotYetValid)

        let fine = try await forge(tokens, with: record, for: user, in: environment, issuedAt: now, expiresAt: now.addingTimeInterval(3600))
        #expect(try await tokens.verify(fine).userID == user.id)
    }

    @Test(arguments: StoreKind.allCases)
    func aRetiredSigningKeyStopsVerifyingOnceItsTokensHaveExpired(kind: StoreKind) async throws {
        let start = Date(timeIntervalSince1970: 1_900_000_000)
        let clock = Mutex(start)
        let (store, account) = try await kind.makeStoreWithAccount()
        let environment = EnvironmentID(accountID: account.id, environment: .production)
        let user = try await store.createUser(try NewUser(username: "u", fullName: nil), in: environment, at: start)
        let tokens = UserTokens(store: store, masterKey: Self.masterKey, issuer: "http://keyway.test", now: { clock.withLock { $0 } })
        let (minted, _) = try await tokens.mint(for: user, in: environment)
        let retired = try #require(try await store.signingKeys(for: environment).first)
        clock.withLock { $0 = start.addingTimeInterval(60) }
        try await tokens.rotate(environment)
        #expect(try await tokens.verify(minted).userID == user.id, "a token minted before the rotation works until it expires")

        // Whoever kept the retired private key signs a fresh, short token after the rotation.
        clock.withLock { $0 = start.addingTimeInterval(2 * 3600) }
        let late = try await forge(
            tokens,
            with: retired,
            for: user,
            in: environment,
            issuedAt: clock.withLock { $0 },
            expiresAt: start.addingTimeInterval(2 * 3600 + 600)
        )
        let error = await #expect(throws: KeywayError.self) { try await tokens.verify(late) }
        #expect(error?.code == .invalidTokenSignature)
    }

    @Test func theMasterKeyFileIsCreatedPrivatelyOnceAndReadAfter() throws {
        let folder = FileManager.default.temporaryDirectory.appendingPathComponent("keyway-master-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: folder, withIntermediateDirectories: true)
        let path = folder.appendingPathComponent("master.key").path
        let first = try MasterKey.loadOrCreate(file: path, mayCreate: true, logger: Logger(label: "test"))
        let attributes = try FileManager.default.attributesOfItem(atPath: path)
        #expect((attributes[.posixPermissions] as? NSNumber)?.intValue == 0o600)
        let second = try MasterKey.loadOrCreate(file: path, mayCreate: false, logger: Logger(label: "test"))
        let sealed = try first.seal(Data("secret".utf8), context: "c")
        #expect(try second.unseal(sealed, context: "c") == Data("secret".utf8))
        #expect(throws: ConfigurationError.self) { try MasterKey(base64: "dG9vIHNob3J0") }
        #expect(try FileManager.default.contentsOfDirectory(atPath: folder.path) == ["master.key"], "no temporary file is left")
    }

    @Test func aMissingMasterKeyFileIsAnErrorWhenSomethingIsSealedUnderIt() throws {
        let folder = FileManager.default.temporaryDirectory.appendingPathComponent("keyway-master-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: folder, withIntermediateDirectories: true)
        let path = folder.appendingPathComponent("master.key").path
        let error = #expect(throws: ConfigurationError.self) {
            try MasterKey.loadOrCreate(file: path, mayCreate: false, logger: Logger(label: "test"))
        }
        #expect(error?.description.contains("restore master.key") == true)
        #expect(error?.description.contains(path) == true)
        #expect(!FileManager.default.fileExists(atPath: path), "no new key was made")
    }

    @Test func aTemporaryKeyFileLeftByAKilledProcessIsRemoved() throws {
        let folder = FileManager.default.temporaryDirectory.appendingPathComponent("keyway-master-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: folder, withIntermediateDirectories: true)
        let path = folder.appendingPathComponent("master.key").path
        let abandoned = path + ".123.456.tmp"
        let young = path + ".789.012.tmp"
        for file in [abandoned, young] {
            #expect(FileManager.default.createFile(atPath: file, contents: Data("a key\n".utf8), attributes: [.posixPermissions: 0o600]))
        }
        try FileManager.default.setAttributes([.modificationDate: Date().addingTimeInterval(-3600)], ofItemAtPath: abandoned)
        _ = try MasterKey.loadOrCreate(file: path, mayCreate: true, logger: Logger(label: "test"))
        #expect(!FileManager.default.fileExists(atPath: abandoned), "an hour-old temporary key file is removed")
        #expect(FileManager.default.fileExists(atPath: young), "a young one may be another process's, about to be linked")
    }

    @Test func processesCreatingTheMasterKeyTogetherAllGetTheSameKey() async throws {
        let folder = FileManager.default.temporaryDirectory.appendingPathComponent("keyway-master-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: folder, withIntermediateDirectories: true)
        let path = folder.appendingPathComponent("master.key").path
        let sealed = try await withThrowingTaskGroup(of: MasterKey.self) { group in
            for _ in 0..<16 {
                group.addTask { try MasterKey.loadOrCreate(file: path, mayCreate: true, logger: Logger(label: "test")) }
            }
            return try await group.reduce(into: []) { $0.append($1) }
        }
        let box = try sealed[0].seal(Data("secret".utf8), context: "c")
        for key in sealed {
            #expect(try key.unseal(box, context: "c") == Data("secret".utf8), "every starter uses the key that was written")
        }
        #expect(try FileManager.default.contentsOfDirectory(atPath: folder.path) == ["master.key"])
    }
}
