import Foundation
import KeywayCore

/// How `/keys/verify` and `/auth` decide on a key another service was given: the
/// one place both ask, so what they answer — the key's principal and its rate
/// limit — cannot differ between them.
struct KeyVerification: Sendable {
    let keys: SecretKeys
    /// The same gate as the API's: a key's requests count alike wherever it is used.
    let rateLimits: RateLimitGate

    /// A key that verified, and what its environment's limit said about this request.
    struct Verified: Sendable {
        let key: AuthenticatedKey
        let admission: RateLimitAdmission
    }

    /// The key's principal, from memory for a key this process has seen, with this request
    /// counted against the key's limit (memory only: no query either way).
    ///
    /// A verification is one of the key's requests: a service asks once per request it serves,
    /// so the limit holds whether the key is used on the API, through a proxy or by a service.
    /// - Parameter key: The key as presented, never logged or echoed.
    /// - Returns: The key and the admission, whose ``RateLimitAdmission/refusal`` is
    ///   `rate_limited` when the key is over its limit; a refused request is not counted.
    /// - Throws: ``KeywayError`` `malformed_api_key`, `invalid_api_key`, `revoked_api_key`,
    ///   `user_token_not_accepted`; or a storage failure.
    func authenticate(_ key: Substring) async throws -> Verified {
        let key = try await keys.authenticate(key)
        return Verified(key: key, admission: rateLimits.admit(key))
    }

    /// ``authenticate(_:)`` for a key this process holds as active, without suspending; `nil`,
    /// and nothing counted, for any other, which ``authenticate(_:)`` then decides.
    func authenticatedFromMemory(_ key: Substring) -> Verified? {
        guard let key = keys.authenticatedFromMemory(key) else { return nil }
        return Verified(key: key, admission: rateLimits.admit(key))
    }

    /// The codes that say what is wrong with a key, which `/keys/verify` answers with 200
    /// `valid: false`; any other failure is the server's or the caller's and keeps its status.
    static let refusals: Set<KeywayError.Code> = [
        .missingAPIKey, .malformedAPIKey, .invalidAPIKey, .revokedAPIKey, .userTokenNotAccepted,
    ]
}
