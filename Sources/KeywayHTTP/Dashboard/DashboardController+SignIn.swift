import Foundation
import HTTPTypes
import Hummingbird
import KeywayCore
import Logging
import Synchronization

// Signing up, in and out: the throttles run before any password hash.
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
        // Every sign-up costs a bcrypt, so each counts against the client before that work.
        do {
            _ = try await clientThrottle.reserve("signup:" + clientKey(request, context.remoteAddress))
        } catch let refusal as AttemptThrottle.Refusal {
            data["formError"] = "Too many sign-ups from your network. Try again in \(refusal.retryAfterSeconds) seconds."
            return page(status: .tooManyRequests)
        }
        let hash = try await hasher.hash(password)
        let member: Member
        do {
            (_, member) = try await store.createAccount(name: company, ownerEmail: email, passwordHash: hash, at: Date())
        } catch let error as KeywayError where error.code == .emailTaken {
            data["emailError"] = error.message
            return page(status: .conflict)
        }
        context.logger.info("account signed up", metadata: ["account.id": "\(member.accountID)", "member.id": "\(member.id)"])
        var response = Response(status: .seeOther, headers: [.location: "/dashboard/settings/api-keys"])
        response.setCookie(try await sessions.start(for: member))
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
        // Refused before any throttling: an invented address becomes a throttle key, and keys stay short.
        guard typedEmail.utf8.count <= MemberInput.maximumEmailBytes else {
            return page("Enter an email address of at most \(MemberInput.maximumEmailBytes) bytes.", status: .badRequest)
        }
        let password = context.form["password"] ?? ""
        // No member has such a password (bcrypt would check a shorter one), so it is refused unhashed.
        if let problem = MemberInput.unusablePassword(password) { return page(problem, status: .badRequest) }
        let email = (try? MemberInput.email(typedEmail)) ?? typedEmail.lowercased()
        let accountKey = "signin-email:" + email
        // Reserved before the password hash, atomically: concurrent attempts cannot all pass
        // the check before one is counted, and a flood of attempts costs no bcrypt. The client
        // first: a client already refused must not add the emails it invents to the bounded
        // email table, where they would push out (and so unlock) an email that is locked.
        let reservations: [(AttemptLimiter, AttemptThrottle.Reservation)]
        do {
            reservations = try await reserve([
                (clientThrottle, "signin-client:" + clientKey(request, context.remoteAddress)), (accountThrottle, accountKey),
            ])
        } catch let refusal as AttemptThrottle.Refusal {
            context.logger.notice("sign-in throttled", metadata: ["locked": "\(refusal.lockedOut)"])
            let wait = refusal.retryAfterSeconds
            return page(
                "Too many failed sign-ins. Try again in \(wait) second\(wait == 1 ? "" : "s")\(refusal.lockedOut ? "; the account is locked for a while" : "").",
                status: .tooManyRequests
            )
        }
        let credentials: (member: Member, passwordHash: String)?
        let valid: Bool
        do {
            credentials = try await store.memberCredentials(email: email)
            let hash: String
            if let stored = credentials?.passwordHash { hash = stored } else { hash = try await decoy() }
            valid = try await hasher.verify(password, hash: hash)
        } catch {
            await release(reservations)
            throw error
        }
        // A failure stays counted: its reservation was the count.
        guard let member = credentials?.member, valid, !password.isEmpty else {
            return page("The email or password is wrong.", status: .unauthorized)
        }
        try await accountThrottle.reset(accountKey)
        // A success is no failure of the network it came from.
        await release(reservations.filter { $0.1.key != accountKey })
        context.logger.info("member signed in", metadata: ["member.id": "\(member.id)"])
        var response = Response(status: .seeOther, headers: [.location: "/dashboard/settings/api-keys"])
        response.setCookie(try await sessions.start(for: member))
        return response
    }

    /// The client's throttling key: its address, read from the forwarding header only when the peer is a trusted proxy.
    func clientKey(_ request: Request, _ peer: String) -> String {
        trustedProxies.clientKey(peer: peer, headers: request.headers)
    }

    /// Reserves an attempt with each limiter, or none: when one refuses, those made are released.
    func reserve(_ attempts: [(AttemptLimiter, String)]) async throws -> [(AttemptLimiter, AttemptThrottle.Reservation)] {
        var made: [(AttemptLimiter, AttemptThrottle.Reservation)] = []
        do {
            for (limiter, key) in attempts { made.append((limiter, try await limiter.reserve(key))) }
        } catch {
            await release(made)
            throw error
        }
        return made
    }

    /// Uncounts attempts that were not made. Best effort: one left counted only errs towards refusing.
    func release(_ reservations: [(AttemptLimiter, AttemptThrottle.Reservation)]) async {
        for (limiter, reservation) in reservations { try? await limiter.release(reservation) }
    }

    @Sendable func signOut(_ request: Request, context: SignedInRequestContext) async throws -> Response {
        var response = Response(status: .seeOther, headers: [.location: "/dashboard/signin?notice=signed-out"])
        response.setCookie(try await sessions.end(context.signedIn.session))
        return response
    }

    func decoy() async throws -> String {
        if let hash = decoyHash.value.withLock({ $0 }) { return hash }
        let hash = try await hasher.hash(BrowserToken.random())
        decoyHash.value.withLock { $0 = hash }
        return hash
    }
}
