import Foundation
import HTTPTypes
import Hummingbird
import KeywayCore

/// `/auth`, for a reverse proxy's sub-request (nginx `auth_request`, Traefik
/// ForwardAuth, Envoy's HTTP `ext_authz`): reads the client's `Authorization` as the
/// proxy forwards it and answers 200 with an empty body and identity headers, or the usual error.
///
/// A 2xx has no body: nginx does not reuse the connection to an auth server whose
/// 2xx carries one (see docs/gateway.md). It reveals nothing `/whoami` does not, so
/// it needs no credential of its own, and it never echoes the key.
struct ForwardAuthController {
    typealias Context = KeywayRequestContext

    let verification: KeyVerification
    let store: any UserStore

    /// The methods routed (and documented) here: nginx's `auth_request` sends GET, Traefik GET,
    /// Envoy the client's, with the client's path after its `path_prefix` (`/auth/…`). Any other
    /// method a client may use (TRACE, PROPFIND, QUERY…) reaches ``authorize`` through
    /// ``ForwardAuthAnyMethodMiddleware``.
    static let methods: [HTTPRequest.Method] = [.get, .head, .post, .put, .patch, .delete, .options]

    var endpoints: RouteCollection<Context> {
        let routes = RouteCollection(context: Context.self)
        for path in ["auth", "auth/**"] {
            for method in Self.methods {
                routes.on(RouterPath(path), method: method, use: authorize)
            }
        }
        return routes
    }

    /// Whether `path` is `/auth` or below it.
    static func isForwardAuth(_ path: String) -> Bool {
        path.utf8.starts(with: "/auth".utf8) && (path.utf8.count == 5 || path.utf8.dropFirst(5).first == UInt8(ascii: "/"))
    }

    /// 200, empty, with the identity headers; 429 `rate_limited` over the key's limit, before any
    /// lookup; the RateLimit fields on every answer about a key whose environment has a limit.
    @Sendable func authorize(_ request: Request, context: Context) async throws -> Response {
        let verified = try await verification.authenticate(try SecretKeyAuthenticator.bearerToken(request.headers[values: .authorization]))
        if var refused = verified.admission.refusalResponse(requestID: context.requestID) {
            verified.key.applyExpiry(to: &refused.headers)
            return refused
        }
        var response: Response
        do {
            // 200 with an empty body: Envoy's HTTP ext_authz allows a request only on a 200, and
            // nginx reuses its connection on an empty 200 as on a 204 (docs/gateway.md).
            response = Response(status: .ok, headers: try await identity(of: verified.key, for: request))
        } catch {
            // Mapped here so that the RateLimit fields reach the 404 (and any error) too.
            let keywayError = ErrorMappingMiddleware.keywayError(for: error, request: request, context: context)
            response = ErrorMappingMiddleware.response(for: keywayError, requestID: context.requestID)
        }
        verified.admission.apply(to: &response.headers)
        verified.key.applyExpiry(to: &response.headers)
        return response
    }

    /// What the proxy passes upstream: the key's principal and, for `x-keyway-user-id`, the user.
    private func identity(of key: AuthenticatedKey, for request: Request) async throws -> HTTPFields {
        var headers = HTTPFields()
        headers.reserveCapacity(8)
        headers[.keywayAccountID] = key.environmentID.accountID.rawValue
        headers[.keywayEnvironment] = key.environmentID.environment.rawValue
        headers[.keywayKeyHint] = key.asciiHint
        if let reference = request.headers[.xKeywayUserID] {
            // Resolved inside the key's environment only: another environment's user is not found.
            // Usernames are stored in NFC, so a decomposed spelling names the same user.
            guard !reference.isEmpty, let user = try await store.user(UserInput.normalized(reference), in: key.environmentID) else {
                // Quoted back only in part: the header can be as long as the server accepts.
                let quoted = reference.count > 64 ? reference.prefix(64) + "…" : reference
                throw KeywayError.userNotFound(quoted, in: key.environmentID.environment, existsIn: nil)
            }
            headers[.keywayUserID] = user.id.rawValue
        }
        headers[.cacheControl] = "no-store"
        return headers
    }
}

/// `/auth` answers every method, not only those routed: Envoy's `ext_authz` forwards the
/// client's, whatever it is. A method no route has reaches the forward-auth handler here
/// instead of a 405.
struct ForwardAuthAnyMethodMiddleware: RouterMiddleware {
    typealias Context = KeywayRequestContext

    let controller: ForwardAuthController

    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        guard !ForwardAuthController.methods.contains(request.method), ForwardAuthController.isForwardAuth(request.uri.path) else {
            return try await next(request, context)
        }
        return try await controller.authorize(request, context: context)
    }
}
