import Foundation
import HTTPTypes
import Hummingbird
import KeywayCore
import Logging
import NIOHTTP1

/// Turns dashboard errors into redirects and HTML error pages, and adds the
/// headers every dashboard page carries.
struct DashboardResponseMiddleware: RouterMiddleware {
    typealias Context = DashboardRequestContext

    let pages: DashboardPages

    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        var response: Response
        do {
            response = try await next(request, context)
        } catch let redirect as DashboardRedirect {
            response = Response(status: .seeOther, headers: [.location: redirect.location])
        } catch let page as DashboardErrorPage {
            response = pages.errorPage(page, context: context)
        } catch let error as KeywayError where error.status != .internalServerError {
            response = pages.errorPage(
                DashboardErrorPage(status: error.status, title: "Something is not right", message: error.message),
                context: context
            )
        } catch let error as any HTTPResponseError where error.status == .contentTooLarge {
            response = pages.errorPage(
                DashboardErrorPage(status: .contentTooLarge, title: "Too large", message: "That form was too large."),
                context: context
            )
        } catch let error where error is HTTPParserError || error is RequestBodyTimeout {
            // A form whose body broke its framing or came too late is the client's doing:
            // ErrorMappingMiddleware answers it (400 or 408) and logs it at notice, as for the API.
            throw error
        } catch {
            context.logger.error("dashboard request failed", metadata: ["error": "\(String(reflecting: error))"])
            response = pages.errorPage(
                DashboardErrorPage(
                    status: .internalServerError,
                    title: "Something went wrong",
                    message: "Something went wrong on our side. Quote request \(context.requestID) if you contact support."
                ),
                context: context
            )
        }
        // Pages can show a secret once; nothing may keep a copy.
        response.headers[.cacheControl] = "no-store"
        response.headers[.contentSecurityPolicy] =
            "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
        response.headers[HTTPField.Name("X-Frame-Options")!] = "DENY"
        response.headers[HTTPField.Name("X-Content-Type-Options")!] = "nosniff"
        // An invitation link carries its token in the query: a Referer from its page says the origin
        // only, not even the path to the page's own stylesheet (a proxy's access log would keep it).
        // Not `no-referrer`: browsers then send `Origin: null` with the page's form, which is refused.
        response.headers[HTTPField.Name("Referrer-Policy")!] = request.uri.path.hasPrefix("/dashboard/join") ? "strict-origin" : "same-origin"
        return response
    }
}

/// Loads the signed-in member from the session cookie, and gives anonymous
/// visitors a CSRF cookie for the sign-in and sign-up forms.
struct DashboardSessionMiddleware: RouterMiddleware {
    typealias Context = DashboardRequestContext

    let sessions: DashboardSessions

    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        var context = context
        if let token = request.cookies[sessions.sessionCookie]?.value, let found = try await sessions.find(token: token) {
            switch found {
            case .signedIn(let signedIn):
                // An account that requires a second factor opens nothing else until it is set up.
                if signedIn.account.policy.requireTwoFactor, !signedIn.member.hasTwoFactor, !Self.opensWithoutSecondFactor(request.uri.path) {
                    throw DashboardRedirect(location: "/dashboard/settings/two-factor?required=1")
                }
                context.signedIn = signedIn
                context.csrfToken = signedIn.session.csrfToken
            case .awaitingSecondFactor(let session, let member):
                context.awaitingSecondFactor = (session, member)
                context.csrfToken = session.csrfToken
            }
            return try await next(request, context)
        }
        if let token = request.cookies[sessions.csrfCookie]?.value, token.utf8.count == 43 {
            context.csrfToken = token
            return try await next(request, context)
        }
        context.csrfToken = BrowserToken.random()
        var response = try await next(request, context)
        response.setCookie(sessions.anonymousCSRFCookie(context.csrfToken))
        return response
    }
}

extension DashboardSessionMiddleware {
    /// What a member of an account that requires a second factor reaches before setting one up.
    static func opensWithoutSecondFactor(_ path: String) -> Bool {
        path.hasPrefix("/dashboard/settings/two-factor") || path.hasPrefix("/dashboard/static/")
            || ["/dashboard/signout", "/dashboard/switch-account"].contains(path)
    }
}

/// Refuses any state-changing dashboard request that does not carry the
/// page's CSRF token or that comes from another origin, before any handler runs.
struct CSRFMiddleware: RouterMiddleware {
    typealias Context = DashboardRequestContext

    /// Dashboard forms are small; anything bigger is not ours.
    static let maximumFormSize = 64 * 1024

    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        guard request.method != .get, request.method != .head else {
            return try await next(request, context)
        }
        if let origin = request.headers[.origin] {
            // `null` is what sandboxed frames, data: URLs and some cross-site redirects send:
            // never one of our pages, so it is refused like another site.
            guard origin != "null" else {
                context.logger.notice("dashboard form refused: Origin null")
                throw DashboardErrorPage.forbidden
            }
            let originHost = URLComponents(string: origin)?.host.map { host in
                URLComponents(string: origin)?.port.map { "\(host):\($0)" } ?? host
            }
            guard let originHost, originHost == request.head.authority else {
                throw DashboardErrorPage.forbidden
            }
        }
        let body = try await request.body.collect(upTo: Self.maximumFormSize)
        guard !NULRefusalMiddleware<Context>.holdsNUL(String(buffer: body)) else {
            throw DashboardErrorPage.holdsNUL
        }
        let form = HTMLForm(urlEncoded: String(buffer: body))
        guard let submitted = form["csrf"], !context.csrfToken.isEmpty, BrowserToken.constantTimeEquals(submitted, context.csrfToken) else {
            context.logger.notice("dashboard form refused: CSRF token missing or wrong")
            throw DashboardErrorPage.forbidden
        }
        var context = context
        context.form = form
        return try await next(request, context)
    }
}
