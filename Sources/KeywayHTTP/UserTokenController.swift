import Foundation
import HTTPTypes
import Hummingbird
import KeywayCore
import Logging

/// Endpoints for frontends, authenticated with a user token, never a secret key:
/// `GET /me` (with CORS for the environment's allowed origins) and the JWKS.
struct UserTokenController {
    typealias Context = KeywayRequestContext

    let store: any KeywayStore
    let userTokens: UserTokens

    var endpoints: RouteCollection<Context> {
        let routes = RouteCollection(context: Context.self)
        routes.get(".well-known/jwks.json", use: jwks)
        routes.get("me", use: me)
        routes.on("me", method: .options, use: preflight)
        return routes
    }

    /// `GET /.well-known/jwks.json?account=…&environment=…`: the public keys that verify the environment's live tokens.
    @Sendable func jwks(_ request: Request, context: KeywayRequestContext) async throws -> Response {
        let query = request.uri.queryParameters
        guard let account = query["account"].map(String.init), !account.isEmpty,
            let environment = query["environment"].flatMap({ Environment(rawValue: String($0)) })
        else {
            throw KeywayError.invalidInput(
                field: "account",
                "Name the environment: /.well-known/jwks.json?account=<account id>&environment=development|production."
            )
        }
        let keys = try await userTokens.publishedKeys(for: EnvironmentID(accountID: AccountID(rawValue: account), environment: environment))
        let body = try JSONSerialization.data(withJSONObject: ["keys": keys], options: [.sortedKeys, .withoutEscapingSlashes])
        return Response(
            status: .ok,
            headers: [.contentType: "application/json", .cacheControl: "public, max-age=300", .accessControlAllowOrigin: "*"],
            body: .init(byteBuffer: ByteBuffer(bytes: body))
        )
    }

    /// `GET /me`: the profile of the user the token was minted for.
    @Sendable func me(_ request: Request, context: KeywayRequestContext) async throws -> Response {
        let origin = request.headers[.origin]
        var response: Response
        do {
            let verified = try await userTokens.verify(try Self.userToken(request.headers[values: .authorization]))
            // By identifier only: a username can never stand in for the token's subject.
            guard let user = try await store.user(id: verified.userID, in: verified.environmentID) else {
                throw KeywayError(.tokenUserDeleted, "The user this token was issued for no longer exists.")
            }
            response = try context.responseEncoder.encode(UserResponse(user), from: request, context: context)
            if let origin, try await store.allowedOrigins(for: verified.environmentID).contains(origin) {
                Self.allow(origin, on: &response)
            }
        } catch let error as KeywayError {
            response = ErrorMappingMiddleware.response(for: error, requestID: context.requestID)
            // A frontend on an allowed origin must be able to read why it was refused.
            if let origin, try await store.isOriginAllowedAnywhere(origin) {
                Self.allow(origin, on: &response)
            }
        }
        NoStoreMiddleware<KeywayRequestContext>.mark(&response)
        return response
    }

    /// `OPTIONS /me`: the CORS preflight. It carries no token, so any environment's allowed origins qualify;
    /// the real response is then allowed only for the token's own environment.
    @Sendable func preflight(_ request: Request, context: KeywayRequestContext) async throws -> Response {
        var response = Response(status: .noContent)
        if let origin = request.headers[.origin], try await store.isOriginAllowedAnywhere(origin) {
            Self.allow(origin, on: &response)
            response.headers[.accessControlAllowMethods] = "GET"
            response.headers[.accessControlAllowHeaders] = "Authorization"
            response.headers[.accessControlMaxAge] = "600"
        }
        return response
    }

    private static func allow(_ origin: String, on response: inout Response) {
        response.headers[.accessControlAllowOrigin] = origin
        response.headers[.vary] = "Origin"
    }

    /// The bearer user token; a secret key here is refused by name, so it is never mistaken for one.
    static func userToken(_ values: [String]) throws -> String {
        let token: Substring
        switch BearerCredential.parse(values) {
        case .success(let credential): token = credential
        case .failure(.absent), .failure(.notBearer), .failure(.empty):
            throw KeywayError(.missingUserToken, "This endpoint needs a user token: 'Authorization: Bearer <user token>'.")
        case .failure(.several): throw KeywayError(.malformedUserToken, "Send exactly one Authorization header.")
        case .failure(.notOneWord): throw KeywayError(.malformedUserToken, "The user token must be a single word with no spaces.")
        }
        if token.hasPrefix("kw_") {
            throw KeywayError(
                .secretKeyNotAccepted,
                "Secret keys are for your backend. Mint a user token with GET /users/{id}/token and give that to the frontend."
            )
        }
        return String(token)
    }
}
