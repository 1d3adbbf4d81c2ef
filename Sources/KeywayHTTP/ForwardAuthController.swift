import Foundation
import HTTPTypes
import Hummingbird
import KeywayCore
import NIOCore

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
        if let refused = Self.refusal(of: verified, requestID: context.requestID) { return refused.response }
        do {
            return Self.allowance(of: verified, user: try await user(named: request.headers[.xKeywayUserID], for: verified.key)).response
        } catch {
            // Mapped here so that the RateLimit fields reach the 404 (and any error) too.
            let keywayError = ErrorMappingMiddleware.keywayError(for: error, request: request, context: context)
            var response = ErrorMappingMiddleware.response(for: keywayError, requestID: context.requestID)
            verified.admission.apply(to: &response.headers)
            verified.key.applyExpiry(to: &response.headers)
            return response
        }
    }

    /// The whole answer when memory alone decides it, for ``ForwardAuthLane``: a routed method on
    /// `/auth` or a path below it, with a key this process holds as active and no user context.
    /// `nil`, with nothing counted, for any other request, which the router then answers.
    func answerFromMemory(to head: HTTPRequest, requestID: String) -> ForwardAuthAnswer? {
        guard Self.methods.contains(head.method), let path = head.path, Self.laneRoute(path) != nil,
            head.headerFields[.xKeywayUserID] == nil,
            let token = try? SecretKeyAuthenticator.bearerToken(head.headerFields[values: .authorization]),
            let verified = verification.authenticatedFromMemory(token)
        else { return nil }
        return Self.refusal(of: verified, requestID: requestID) ?? Self.allowance(of: verified, user: nil)
    }

    /// The route the router names a path the lane may answer by, in metrics: `/auth`, or `/auth/**`
    /// for a plain path below it. `nil` for a query, a percent sign, an empty segment or a trailing
    /// slash, which only the router reads as it does.
    static func laneRoute(_ path: String) -> String? {
        let bytes = path.utf8
        guard isForwardAuth(path), !bytes.contains(where: { $0 == UInt8(ascii: "?") || $0 == UInt8(ascii: "%") || $0 == 0 }) else {
            return nil
        }
        if bytes.count == 5 { return "/auth" }
        guard bytes.count > 6, bytes.last != UInt8(ascii: "/"), !path.contains("//") else { return nil }
        return "/auth/**"
    }

    /// A 429 for a key over its limit, decided before any lookup.
    private static func refusal(of verified: KeyVerification.Verified, requestID: String) -> ForwardAuthAnswer? {
        guard var refused = verified.admission.refusal(requestID: requestID) else { return nil }
        verified.key.applyExpiry(to: &refused.headers)
        return refused
    }

    /// 200 with an empty body: Envoy's HTTP ext_authz allows a request only on a 200, and nginx
    /// reuses its connection on an empty 200 as on a 204 (docs/gateway.md).
    private static func allowance(of verified: KeyVerification.Verified, user: UserID?) -> ForwardAuthAnswer {
        var headers = HTTPFields()
        headers.reserveCapacity(10)
        headers[.keywayAccountID] = verified.key.environmentID.accountID.rawValue
        headers[.keywayEnvironment] = verified.key.environmentID.environment.rawValue
        headers[.keywayKeyHint] = verified.key.asciiHint
        if let user { headers[.keywayUserID] = user.rawValue }
        headers[.cacheControl] = "no-store"
        verified.admission.apply(to: &headers)
        verified.key.applyExpiry(to: &headers)
        return ForwardAuthAnswer(status: .ok, headers: headers, body: nil)
    }

    /// The user `x-keyway-user-id` names (id or username), inside the key's environment only:
    /// another environment's user is not found. `nil` when the header is absent.
    private func user(named reference: String?, for key: AuthenticatedKey) async throws -> UserID? {
        guard let reference else { return nil }
        // Usernames are stored in NFC, so a decomposed spelling names the same user.
        guard !reference.isEmpty, let user = try await store.user(UserInput.normalized(reference), in: key.environmentID) else {
            // Quoted back only in part: the header can be as long as the server accepts.
            let quoted = reference.count > 64 ? reference.prefix(64) + "…" : reference
            throw KeywayError.userNotFound(quoted, in: key.environmentID.environment, existsIn: nil)
        }
        return user.id
    }
}

/// What `/auth` answers, before the fields every response gets (request id, date, server).
struct ForwardAuthAnswer: Sendable {
    var status: HTTPResponse.Status
    var headers: HTTPFields
    var body: ByteBuffer?

    var response: Response {
        Response(status: status, headers: headers, body: body.map { ResponseBody(byteBuffer: $0) } ?? ResponseBody())
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
