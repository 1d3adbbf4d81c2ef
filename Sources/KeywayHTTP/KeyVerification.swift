import Foundation
import KeywayCore

/// How `/keys/verify` and `/auth` decide on a key another service was given: the
/// one place both ask, so what they answer (and anything added to it, such as
/// limits) cannot differ between them.
struct KeyVerification: Sendable {
    let keys: SecretKeys

    /// The key's principal, from memory for a key this process has seen.
    /// - Parameter key: The key as presented, never logged or echoed.
    /// - Throws: ``KeywayError`` `malformed_api_key`, `invalid_api_key`, `revoked_api_key`,
    ///   `user_token_not_accepted`; or a storage failure.
    func authenticate(_ key: Substring) async throws -> AuthenticatedKey {
        try await keys.authenticate(key)
    }

    /// The codes that say what is wrong with a key, which `/keys/verify` answers with 200
    /// `valid: false`; any other failure is the server's or the caller's and keeps its status.
    static let refusals: Set<KeywayError.Code> = [
        .missingAPIKey, .malformedAPIKey, .invalidAPIKey, .revokedAPIKey, .userTokenNotAccepted,
    ]
}
