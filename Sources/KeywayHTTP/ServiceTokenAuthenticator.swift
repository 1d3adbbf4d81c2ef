import Foundation
import Hummingbird
import KeywayCore
import Metrics

/// Authenticates `Authorization: Bearer <service token>`, the credential of the operator's own
/// services. An account's key is refused here, as a service token is on the Users API.
///
/// Called by the handler itself rather than run as a middleware with a child context: on a
/// route as hot as `/keys/verify` (one call per request a service serves) the group's extra
/// hops cost more than the check.
enum ServiceTokenAuthenticator {
    /// The request's service token, or the error that says what is wrong with it.
    static func authenticate(_ request: Request, with serviceTokens: ServiceTokens) async throws -> ServiceTokenRecord {
        do {
            return try await serviceTokens.authenticate(try bearerToken(request.headers[values: .authorization]))
        } catch let error as KeywayError {
            SecretKeyAuthenticator.failureCounter(for: error.code).increment()
            throw error
        }
    }

    static func bearerToken(_ values: [String]) throws -> Substring {
        switch BearerCredential.parse(values) {
        case .success(let credential): return credential
        case .failure(.absent), .failure(.notBearer), .failure(.empty):
            throw KeywayError(.missingServiceToken, "This endpoint needs a service token: send 'Authorization: Bearer <service token>'.")
        case .failure(.several): throw KeywayError(.invalidServiceToken, "Send exactly one Authorization header.")
        case .failure(.notOneWord): throw KeywayError(.invalidServiceToken, "The service token must be a single word with no spaces.")
        }
    }
}
