import Foundation
import HTTPTypes
import Hummingbird
import KeywayCore
import Logging
import Synchronization

// Signing up, in and out: pages around `SignInPolicy`, which throttles before any password hash.
extension DashboardController {
    @Sendable func home(_ request: Request, context: DashboardRequestContext) -> Response {
        Response(status: .seeOther, headers: [.location: context.signedIn == nil ? "/dashboard/signin" : "/dashboard/settings/api-keys"])
    }

    @Sendable func signUpPage(_ request: Request, context: DashboardRequestContext) throws -> Response {
        if context.signedIn != nil { throw DashboardRedirect(location: "/dashboard/settings/api-keys") }
        return pages.render(
            "signup",
            title: "Create your account",
            csrf: context.csrfToken,
            signedIn: nil,
            data: ["minimumPasswordLength": MemberInput.minimumPasswordLength]
        )
    }

    @Sendable func signUp(_ request: Request, context: DashboardRequestContext) async throws -> Response {
        let form = context.form
        var data: [String: Any] = [
            "minimumPasswordLength": MemberInput.minimumPasswordLength,
            "companyValue": form["company"] ?? "", "emailValue": form["email"] ?? "",
        ]
        func page(status: HTTPResponse.Status) -> Response {
            pages.render("signup", title: "Create your account", csrf: context.csrfToken, signedIn: nil, data: data, status: status)
        }
        var company = ""
        var email = ""
        var password = ""
        do { company = try MemberInput.companyName(form["company"] ?? "") } catch { data["companyError"] = error.message }
        do { email = try MemberInput.email(form["email"] ?? "") } catch { data["emailError"] = error.message }
        do { password = try MemberInput.newPassword(form["password"] ?? "") } catch { data["passwordError"] = error.message }
        guard data["companyError"] == nil, data["emailError"] == nil, data["passwordError"] == nil else {
            return page(status: .badRequest)
        }
        let member: Member
        do {
            switch try await signInPolicy.signUp(
                company: company,
                email: email,
                password: password,
                client: clientKey(request, context.remoteAddress),
                audit: audit(request, requestID: context.requestID, remoteAddress: context.remoteAddress, actor: email)
            ) {
            case .signedUp(let created): member = created
            case .throttled(let refusal):
                data["formError"] = "Too many sign-ups from your network. Try again in \(refusal.retryAfterSeconds) seconds."
                return page(status: .tooManyRequests)
            }
        } catch let error as KeywayError where error.code == .emailTaken {
            data["emailError"] = error.message
            return page(status: .conflict)
        }
        context.logger.info("account signed up", metadata: ["account.id": "\(member.accountID)", "member.id": "\(member.id)"])
        var response = Response(status: .seeOther, headers: [.location: "/dashboard/settings/api-keys"])
        response.setCookie(
            try await sessions.start(
                for: member,
                audit: audit(request, requestID: context.requestID, remoteAddress: context.remoteAddress, actor: member.email)
            )
        )
        return response
    }

    @Sendable func signInPage(_ request: Request, context: DashboardRequestContext) throws -> Response {
        if context.signedIn != nil { throw DashboardRedirect(location: "/dashboard/settings/api-keys") }
        let notice: String? =
            switch request.uri.queryParameters["notice"] {
            case "signed-out": "You are signed out."
            case "password-changed": "Your password was changed and every session ended. Sign in with the new password."
            default: nil
            }
        return pages.render("signin", title: "Sign in", csrf: context.csrfToken, signedIn: nil, notice: notice)
    }

    @Sendable func signIn(_ request: Request, context: DashboardRequestContext) async throws -> Response {
        let typedEmail = context.form["email"] ?? ""
        func page(_ error: String, status: HTTPResponse.Status) -> Response {
            pages.render(
                "signin",
                title: "Sign in",
                csrf: context.csrfToken,
                signedIn: nil,
                data: ["formError": error, "emailValue": typedEmail],
                status: status
            )
        }
        let member: Member
        switch try await signInPolicy.signIn(
            email: typedEmail,
            password: context.form["password"] ?? "",
            client: clientKey(request, context.remoteAddress),
            audit: audit(request, requestID: context.requestID, remoteAddress: context.remoteAddress, actor: typedEmail)
        ) {
        case .signedIn(let found): member = found
        case .unusable(let problem): return page(problem, status: .badRequest)
        case .wrongCredentials: return page("The email or password is wrong.", status: .unauthorized)
        case .throttled(let refusal):
            context.logger.notice("sign-in throttled", metadata: ["locked": "\(refusal.lockedOut)"])
            let wait = refusal.retryAfterSeconds
            return page(
                "Too many failed sign-ins. Try again in \(wait) second\(wait == 1 ? "" : "s")\(refusal.lockedOut ? "; the account is locked for a while" : "").",
                status: .tooManyRequests
            )
        }
        // With a second factor the password opens only the code page, for a few minutes.
        let awaitingCode = member.hasTwoFactor
        context.logger.info(awaitingCode ? "password accepted; code to come" : "member signed in", metadata: ["member.id": "\(member.id)"])
        var response = Response(
            status: .seeOther,
            headers: [.location: awaitingCode ? "/dashboard/signin/code" : "/dashboard/settings/api-keys"]
        )
        response.setCookie(
            try await sessions.start(
                for: member,
                awaitingSecondFactor: awaitingCode,
                audit: audit(request, requestID: context.requestID, remoteAddress: context.remoteAddress, actor: member.email)
            )
        )
        return response
    }

    /// The client's throttling key: its address, read from the forwarding header only when the peer is a trusted proxy.
    func clientKey(_ request: Request, _ peer: String) -> String {
        trustedProxies.clientKey(peer: peer, headers: request.headers)
    }

    /// Who acts and from where, for the audit log: `actor`, the client's address as the
    /// trusted proxies give it, the user agent and the request id.
    func audit(_ request: Request, requestID: String, remoteAddress: String, actor: String) -> AuditContext {
        AuditContext(
            actor: actor,
            clientAddress: trustedProxies.clientAddress(peer: remoteAddress, headers: request.headers)?.description,
            userAgent: request.headers[.userAgent],
            requestID: requestID
        )
    }

    /// The signed-in member acting in this request.
    func audit(_ request: Request, _ context: SignedInRequestContext) -> AuditContext {
        audit(request, requestID: context.requestID, remoteAddress: context.remoteAddress, actor: context.member.email)
    }

    @Sendable func signOut(_ request: Request, context: SignedInRequestContext) async throws -> Response {
        var response = Response(status: .seeOther, headers: [.location: "/dashboard/signin?notice=signed-out"])
        response.setCookie(try await sessions.end(context.signedIn, audit: audit(request, context)))
        return response
    }
}
