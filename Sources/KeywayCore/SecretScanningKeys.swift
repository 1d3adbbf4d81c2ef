import Crypto
public import Foundation

/// GitHub's secret-scanning public keys, to check that a leak report comes from GitHub:
/// the `Github-Public-Key-Signature` header is an ECDSA P-256 / SHA-256 signature (DER,
/// base64) over the raw request body, by the key `Github-Public-Key-Identifier` names.
///
/// Read from a file in the format GitHub publishes them at
/// `https://api.github.com/meta/public_keys/secret_scanning`:
/// `{"public_keys": [{"key_identifier": "…", "key": "-----BEGIN PUBLIC KEY-----…", "is_current": true}]}`.
public struct SecretScanningKeys: Sendable, Equatable {
    private let keys: [String: String]

    /// - Throws: ``ConfigurationError`` naming `variable` when the file cannot be read, is not
    ///   in GitHub's format, holds no key or a key that is not a P-256 public key.
    public init(file path: String, variable: String = "KEYWAY_GITHUB_SECRET_SCANNING_KEYS") throws(ConfigurationError) {
        let data: Data
        do {
            data = try Data(contentsOf: URL(fileURLWithPath: path))
        } catch {
            throw ConfigurationError("\(variable): cannot read \(path): \(error.localizedDescription)")
        }
        try self.init(json: data, source: "\(variable) (\(path))")
    }

    /// - Parameter source: How to name the keys in an error.
    public init(json data: Data, source: String) throws(ConfigurationError) {
        struct File: Decodable {
            struct Key: Decodable {
                let key_identifier: String
                let key: String
            }
            let public_keys: [Key]
        }
        guard let file = try? JSONDecoder().decode(File.self, from: data) else {
            throw ConfigurationError(#"\#(source) is not GitHub's public keys file: {"public_keys": [{"key_identifier": …, "key": …}]}."#)
        }
        var keys: [String: String] = [:]
        for key in file.public_keys {
            guard (try? P256.Signing.PublicKey(pemRepresentation: key.key)) != nil else {
                throw ConfigurationError("\(source): the key \(key.key_identifier.prefix(80)) is not a PEM P-256 public key.")
            }
            keys[key.key_identifier] = key.key
        }
        guard !keys.isEmpty else { throw ConfigurationError("\(source) holds no key.") }
        self.keys = keys
    }

    /// Whether `signature` (base64 DER) is a valid signature of `body` by the key `identifier` names.
    public func verify(identifier: String, signature: String, body: some DataProtocol) -> Bool {
        guard let pem = keys[identifier], let key = try? P256.Signing.PublicKey(pemRepresentation: pem),
            let der = Data(base64Encoded: signature), let parsed = try? P256.Signing.ECDSASignature(derRepresentation: der)
        else { return false }
        return key.isValidSignature(parsed, for: body)
    }
}
