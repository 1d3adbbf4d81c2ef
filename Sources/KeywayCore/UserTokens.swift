import Crypto
public import Foundation
import JWTKit
import Synchronization

/// What a verified user token says.
public struct VerifiedUserToken: Sendable, Hashable {
    public let userID: UserID
    public let environmentID: EnvironmentID
    public let expiresAt: Date
}

/// Mints and verifies the short-lived user tokens a customer's frontend holds:
/// ES256 JWTs signed by a per-environment key, verifiable by anyone with the JWKS.
public final class UserTokens: Sendable {
    /// The `aud` of every user token.
    public static let audience = "keyway:user"
    /// The longest lifetime a token may have; also how long a retired key stays published.
    public static let maximumLifetime: TimeInterval = 3600
    /// Allowed difference between instances' clocks when checking `nbf` and `exp`.
    public static let leeway: TimeInterval = 5

    private let store: any SigningKeyStore
    private let masterKey: MasterKey
    /// Settable once the listener is bound, when only then the URL's port is known.
    private let issuerURL: Mutex<String>
    private let lifetime: TimeInterval
    private let now: @Sendable () -> Date
    /// Key collections by `kid`: public keys never change, so this needs no invalidation.
    private let verifiers = Mutex<[String: JWTKeyCollection]>([:])
    private let signers = Mutex<[String: JWTKeyCollection]>([:])

    /// - Parameters:
    ///   - store: Where signing keys are kept.
    ///   - masterKey: Seals signing keys at rest.
    ///   - issuer: The `iss` claim: Keyway's public URL.
    ///   - lifetime: Token lifetime in seconds, at most ``maximumLifetime``.
    ///   - now: The clock; injectable so expiry can be tested without waiting.
    public init(
        store: any SigningKeyStore,
        masterKey: MasterKey,
        issuer: String,
        lifetime: TimeInterval = 1800,
        now: @escaping @Sendable () -> Date = Date.init
    ) {
        precondition(lifetime > 0 && lifetime <= Self.maximumLifetime, "a user token lives at most an hour")
        self.store = store
        self.masterKey = masterKey
        self.issuerURL = Mutex(issuer)
        self.lifetime = lifetime
        self.now = now
    }

    /// The `iss` claim every token carries and every verification requires.
    public var issuer: String { issuerURL.withLock { $0 } }

    /// Replaces the `iss` claim: for a server told to listen on port 0, whose URL is known
    /// only once it is bound. Call it before the first request.
    public func useIssuer(_ issuer: String) {
        issuerURL.withLock { $0 = issuer }
    }

    /// Mints a token for `user` of `environmentID`, creating the environment's signing key on first use.
    public func mint(for user: User, in environmentID: EnvironmentID) async throws -> (token: String, expiresAt: Date) {
        let key = try await activeKey(for: environmentID)
        let issuedAt = Date(timeIntervalSince1970: now().timeIntervalSince1970.rounded(.down))
        let expiresAt = issuedAt.addingTimeInterval(lifetime)
        let claims = UserTokenClaims(
            iss: IssuerClaim(value: issuer),
            sub: SubjectClaim(value: user.id.rawValue),
            aud: AudienceClaim(value: Self.audience),
            env: environmentID.environment.rawValue,
            acct: environmentID.accountID.rawValue,
            iat: IssuedAtClaim(value: issuedAt),
            nbf: NotBeforeClaim(value: issuedAt),
            exp: ExpirationClaim(value: expiresAt),
            jti: IDClaim(value: BrowserToken.random())
        )
        let token = try await signer(for: key).sign(claims, kid: JWKIdentifier(string: key.id))
        return (token, expiresAt)
    }

    /// Verifies a token's signature and claims.
    /// - Throws: ``KeywayError`` with a code saying exactly what is wrong.
    public func verify(_ token: String) async throws -> VerifiedUserToken {
        let header = try Self.header(of: token)
        guard header.alg == "ES256" else {
            throw KeywayError(.unsupportedTokenAlgorithm, "User tokens are signed with ES256; this one says '\(header.alg.prefix(16))'.")
        }
        guard let kid = header.kid, let record = try await signingKey(id: kid) else {
            throw KeywayError(.invalidTokenSignature, "The token was not signed by a Keyway signing key.")
        }
        let claims: UserTokenClaims
        do {
            claims = try await verifier(for: record).verify(token, as: UserTokenClaims.self)
        } catch let error as JWTError where "\(error)".contains("signature") {
            throw KeywayError(.invalidTokenSignature, "The token's signature does not match; it was altered or forged.")
        } catch {
            throw KeywayError(.malformedUserToken, "The token's claims are not those of a Keyway user token.")
        }
        let moment = now()
        guard claims.aud.value.contains(Self.audience) else {
            throw KeywayError(.invalidTokenAudience, "The token is not meant for Keyway user endpoints (audience must be \(Self.audience)).")
        }
        guard claims.iss.value == issuer else {
            throw KeywayError(.invalidTokenIssuer, "The token was issued by another server.")
        }
        guard claims.env == record.environmentID.environment.rawValue, claims.acct == record.environmentID.accountID.rawValue else {
            throw KeywayError(.invalidTokenSignature, "The token's environment does not match the key that signed it.")
        }
        if let notBefore = claims.nbf?.value, notBefore.timeIntervalSince(moment) > Self.leeway {
            throw KeywayError(.tokenNotYetValid, "The token is not valid yet; check the clocks of the machines involved.")
        }
        guard moment.timeIntervalSince(claims.exp.value) <= Self.leeway else {
            throw KeywayError(
                .tokenExpired,
                "The token expired; ask your backend for a new one.",
                details: ["expiredAt": claims.exp.value.formatted(.iso8601)]
            )
        }
        // Keyway never mints a token that lives longer than the maximum, nor one dated ahead:
        // such a token was signed by someone holding a private key, not by Keyway.
        let issuedAt = claims.iat.value
        guard claims.exp.value.timeIntervalSince(issuedAt) <= Self.maximumLifetime else {
            throw KeywayError(.malformedUserToken, "The token claims to live longer than a user token may (an hour).")
        }
        guard issuedAt.timeIntervalSince(moment) <= Self.leeway else {
            throw KeywayError(.tokenNotYetValid, "The token was issued in the future; check the clocks of the machines involved.")
        }
        if let retiredAt = record.retiredAt {
            // A retired key signs nothing new, and what it signed before has expired
            // once the maximum lifetime has passed: after that it verifies nothing.
            guard moment.timeIntervalSince(retiredAt) <= Self.maximumLifetime + Self.leeway,
                issuedAt.timeIntervalSince(retiredAt) <= Self.leeway
            else {
                throw KeywayError(.invalidTokenSignature, "The token was signed by a retired signing key; ask your backend for a new one.")
            }
        }
        guard let userID = UserID(validating: claims.sub.value) else {
            throw KeywayError(.malformedUserToken, "The token's subject is not a user id.")
        }
        return VerifiedUserToken(userID: userID, environmentID: record.environmentID, expiresAt: claims.exp.value)
    }

    /// Replaces the environment's signing key. Tokens signed by the old key keep
    /// working until they expire; its public key stays published until then.
    @discardableResult
    public func rotate(_ environmentID: EnvironmentID, audit: AuditContext = .cli) async throws -> SigningKeyRecord {
        try await store.insertSigningKey(try makeKey(for: environmentID), retiringActive: true, audit: audit)
    }

    /// The public keys that may verify live tokens of the environment, as JWKs.
    public func publishedKeys(for environmentID: EnvironmentID) async throws -> [[String: String]] {
        let moment = now()
        return try await store.signingKeys(for: environmentID).filter { record in
            guard let retiredAt = record.retiredAt else { return true }
            return moment.timeIntervalSince(retiredAt) < Self.maximumLifetime + Self.leeway
        }.map { record in
            let x963 = record.publicKey
            return [
                "kty": "EC", "crv": "P-256", "alg": "ES256", "use": "sig", "kid": record.id,
                "x": Base64URL.encode(x963[1..<33]), "y": Base64URL.encode(x963[33..<65]),
            ]
        }
    }

    // MARK: Keys

    private func activeKey(for environmentID: EnvironmentID) async throws -> SigningKeyRecord {
        if let active = try await store.signingKeys(for: environmentID).first(where: { $0.retiredAt == nil }) {
            return active
        }
        // First use. If another instance creates one at the same moment, the store keeps theirs.
        // The first key, made on the environment's first token: Keyway's doing.
        return try await store.insertSigningKey(try makeKey(for: environmentID), retiringActive: false, audit: .system)
    }

    private func makeKey(for environmentID: EnvironmentID) throws -> SigningKeyRecord {
        let id = "sk_" + Base62.randomString(length: 20)
        let privateKey = P256.Signing.PrivateKey()
        return SigningKeyRecord(
            id: id,
            environmentID: environmentID,
            publicKey: privateKey.publicKey.x963Representation,
            sealedPrivateKey: try masterKey.seal(privateKey.rawRepresentation, context: Self.sealingContext(id, environmentID)),
            createdAt: now().keywayPrecision,
            retiredAt: nil
        )
    }

    private func signingKey(id: String) async throws -> SigningKeyRecord? {
        guard id.hasPrefix("sk_"), id.utf8.count == 23 else { return nil }
        return try await store.signingKey(id: id)
    }

    func signer(for record: SigningKeyRecord) async throws -> JWTKeyCollection {
        if let cached = signers.withLock({ $0[record.id] }) { return cached }
        let raw = try masterKey.unseal(record.sealedPrivateKey, context: Self.sealingContext(record.id, record.environmentID))
        let collection = JWTKeyCollection()
        await collection.add(
            ecdsa: try ES256PrivateKey(backing: P256.Signing.PrivateKey(rawRepresentation: raw)),
            kid: JWKIdentifier(string: record.id)
        )
        signers.withLock { $0[record.id] = collection }
        return collection
    }

    private func verifier(for record: SigningKeyRecord) async throws -> JWTKeyCollection {
        if let cached = verifiers.withLock({ $0[record.id] }) { return cached }
        let collection = JWTKeyCollection()
        await collection.add(
            ecdsa: try ES256PublicKey(backing: P256.Signing.PublicKey(x963Representation: record.publicKey)),
            kid: JWKIdentifier(string: record.id)
        )
        verifiers.withLock { $0[record.id] = collection }
        return collection
    }

    /// Binds a sealed key to its id and environment, so a sealed blob cannot be moved to another row.
    private static func sealingContext(_ id: String, _ environmentID: EnvironmentID) -> String {
        "keyway-signing-key:\(id):\(environmentID.accountID):\(environmentID.environment.rawValue)"
    }

    // MARK: Token parts

    private struct Header: Decodable {
        let alg: String
        let kid: String?
    }

    private static func header(of token: String) throws -> Header {
        let parts = token.split(separator: ".", omittingEmptySubsequences: false)
        guard token.utf8.count <= 4096, parts.count == 3, let data = Base64URL.decode(parts[0]),
            let header = try? JSONDecoder().decode(Header.self, from: data)
        else {
            throw KeywayError(.malformedUserToken, "The user token is not a well-formed JWT.")
        }
        return header
    }
}

/// The claims of a user token. Checked by ``UserTokens/verify(_:)`` with its own clock, not here.
struct UserTokenClaims: JWTPayload {
    var iss: IssuerClaim
    var sub: SubjectClaim
    var aud: AudienceClaim
    var env: String
    var acct: String
    var iat: IssuedAtClaim
    var nbf: NotBeforeClaim?
    var exp: ExpirationClaim
    var jti: IDClaim

    func verify(using algorithm: some JWTAlgorithm) async throws {}
}
