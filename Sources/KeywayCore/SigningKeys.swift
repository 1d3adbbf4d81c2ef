public import Foundation

/// A key that signs one environment's user tokens. Its private half is stored
/// only sealed (AES-GCM) under the master key.
public struct SigningKeyRecord: Sendable, Hashable {
    /// The JWT `kid`, `sk_` followed by 20 base62 characters.
    public var id: String
    public var environmentID: EnvironmentID
    /// The P-256 public key, X9.63 (uncompressed) representation.
    public var publicKey: Data
    /// The private key sealed with AES-GCM under the master key.
    public var sealedPrivateKey: Data
    public var createdAt: Date
    /// When a newer key replaced it; it stays published while tokens it signed may live.
    public var retiredAt: Date?

    /// Builds a record as a store reads it.
    public init(id: String, environmentID: EnvironmentID, publicKey: Data, sealedPrivateKey: Data, createdAt: Date, retiredAt: Date?) {
        self.id = id
        self.environmentID = environmentID
        self.publicKey = publicKey
        self.sealedPrivateKey = sealedPrivateKey
        self.createdAt = createdAt
        self.retiredAt = retiredAt
    }
}
