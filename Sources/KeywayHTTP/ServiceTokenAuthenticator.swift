import Foundation
import Hummingbird
import KeywayCore
import Metrics

/// Authenticates `Authorization: Bearer <service token>`, the credential of the
/// operator's own services, and puts the token in the context. An account's key is
/// refused here, as a service token is on the Users API.
struct ServiceTokenAuthenticator: RouterMiddleware {
    typealias Context = KeywayRequestContext

    let serviceTokens: ServiceTokens

    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        var context = context
        do {
            context.serviceToken = try await serviceTokens.authenticate(try Self.bearerToken(request.headers[values: .authorization]))
        } catch let error as KeywayError {
            SecretKeyAuthenticator.failureCounter(for: error.code).increment()
            throw error
        }
        return try await next(request, context)
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

/// The context of handlers behind ``ServiceTokenAuthenticator``, where the token is not optional.
struct ServiceRequestContext: ChildRequestContext {
    var coreContext: CoreRequestContextStorage
    let requestID: String
    /// The service token that authenticated the request.
    let serviceToken: ServiceTokenRecord

    init(context: KeywayRequestContext) throws {
        guard let serviceToken = context.serviceToken else {
            // Only reachable if a route is registered without the authenticator.
            throw KeywayError(.missingServiceToken, "This endpoint needs 'Authorization: Bearer <service token>'.")
        }
        self.coreContext = context.coreContext
        self.requestID = context.requestID
        self.serviceToken = serviceToken
    }

    var responseEncoder: JSONEncoder { KeywayJSON.encoder }
}
