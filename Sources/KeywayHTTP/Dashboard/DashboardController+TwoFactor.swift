import Foundation
import HTTPTypes
import Hummingbird
import KeywayCore
import Logging

// Two-factor sign-in: the code after the password, and Settings → Account → Two-factor, where a
// member turns TOTP on (a QR code and the secret, a confirming code, ten recovery codes) or off.
extension DashboardController {
    // MARK: Signing in with a code

    @Sendable func codePage(_ request: Request, context: DashboardRequestContext) throws -> Response {
        guard context.awaitingSecondFactor != nil else { throw DashboardRedirect.signIn }
        return pages.render("signin-code", title: "Two-factor code", csrf: context.csrfToken, signedIn: nil)
    }

    /// The code (or a recovery code) that completes a sign-in, throttled like a password.
    @Sendable func submitCode(_ request: Request, context: DashboardRequestContext) async throws -> Response {
        guard let (session, member) = context.awaitingSecondFactor else { throw DashboardRedirect.signIn }
        let typed = context.form["code"] ?? ""
        func page(_ error: String, status: HTTPResponse.Status) -> Response {
            pages.render("signin-code", title: "Two-factor code", csrf: context.csrfToken, signedIn: nil, data: ["formError": error], status: status)
        }
        guard !typed.isEmpty else { return page("Enter the code from your authenticator app.", status: .badRequest) }
        let auditContext = audit(request, requestID: context.requestID, remoteAddress: context.remoteAddress, actor: member.email)
        // Past the stored count of wrong codes, only a recovery code signs in, whatever the
        // throttle's windows allow.
        if !RecoveryCodes.looksLikeOne(typed),
            let record = try await store.twoFactor(of: member.id), record.failures >= TwoFactorRecord.failuresBeforeRecoveryCode
        {
            return page(
                "Too many wrong codes since your last sign-in: sign in with one of your recovery codes.",
                status: .tooManyRequests
            )
        }
        var factor = "totp"
        let check = try await signInPolicy.checkSecondFactor(of: member.id, client: clientKey(request, context.remoteAddress)) {
            guard let used = try await acceptSecondFactor(typed, of: member.id) else { return false }
            factor = used
            return true
        }
        switch check {
        case .confirmed: break
        case .missing, .wrong:
            try await store.recordTwoFactorFailure(of: member.id)
            try await store.recordAudit(
                .member(.signInFailed, member, at: Date(), context: auditContext, details: ["secondFactor": "wrong code"])
            )
            return page("That code is wrong or was used already. Codes change every 30 seconds.", status: .unauthorized)
        case .throttled(let refusal):
            return page("Too many wrong codes. Try again in \(refusal.retryAfterSeconds) seconds.", status: .tooManyRequests)
        }
        guard try await sessions.completeSecondFactor(session, of: member, factor: factor, audit: auditContext) else {
            throw DashboardRedirect.signIn
        }
        if factor == "recovery code" {
            try await store.recordAudit(.member(.recoveryCodeUsed, member, at: Date(), context: auditContext))
        }
        context.logger.info("member signed in with a second factor", metadata: ["member.id": "\(member.id)", "factor": "\(factor)"])
        throw DashboardRedirect(location: "/dashboard/settings/api-keys")
    }

    /// Uses `typed` as the member's second factor: a current TOTP code not used before, or an
    /// unused recovery code, each marked used. - Returns: `totp` or `recovery code`, or `nil`.
    func acceptSecondFactor(_ typed: String, of member: MemberID) async throws -> String? {
        if RecoveryCodes.looksLikeOne(typed) {
            return try await store.useRecoveryCode(twoFactor.recoveryDigest(typed, for: member), of: member, at: Date()) ? "recovery code" : nil
        }
        return try await acceptCode(typed, of: member) ? "totp" : nil
    }

    /// Whether `typed` is the member's current code, not used before; marks its step used.
    func acceptCode(_ typed: String, of member: MemberID) async throws -> Bool {
        guard let record = try await store.twoFactor(of: member) else { return false }
        let codes = TwoFactorCodes(secret: try twoFactor.unseal(record.sealedSecret, for: member))
        guard let step = codes.matchingStep(typed, at: now(), after: record.lastStep) else { return false }
        // Conditional on the step: of two sign-ins racing with one code, one wins.
        return try await store.useTwoFactorStep(step, of: member)
    }

    // MARK: Settings → Account → Two-factor

    @Sendable func twoFactorPage(_ request: Request, context: SignedInRequestContext) async throws -> Response {
        let required = context.account.policy.requireTwoFactor && !context.member.hasTwoFactor
        return try await renderTwoFactor(
            context: context,
            notice: required ? "\(context.account.name) requires two-factor sign-in: set it up to continue." : nil
        )
    }

    /// Draws a new secret (kept pending until a code confirms it) and shows it. Replacing a
    /// secret already on (a new phone) first takes a current code or a recovery code.
    @Sendable func beginTwoFactorSetup(_ request: Request, context: SignedInRequestContext) async throws -> Response {
        if context.member.hasTwoFactor, let problem = try await recheckCode(context.form["code"] ?? "", context: context) {
            return try await renderTwoFactor(context: context, codeError: problem, status: .badRequest)
        }
        let codes = TwoFactorCodes.generate()
        try await store.setPendingTwoFactorSecret(try twoFactor.seal(codes.secret, for: context.member.id), of: context.member.id)
        return try await renderTwoFactor(context: context, setup: codes)
    }

    @Sendable func confirmTwoFactor(_ request: Request, context: SignedInRequestContext) async throws -> Response {
        let member = context.member
        guard let sealed = try await store.pendingTwoFactorSecret(of: member.id) else {
            throw DashboardRedirect(location: "/dashboard/settings/two-factor")
        }
        let codes = TwoFactorCodes(secret: try twoFactor.unseal(sealed, for: member.id))
        var step: Int64?
        let check = try await signInPolicy.confirmInSession(context.signedIn.session.digest) {
            step = codes.matchingStep(context.form["code"] ?? "", at: now(), after: nil)
            return step != nil
        }
        guard case .confirmed = check, let step else {
            let problem =
                if case .throttled(let refusal) = check { "Too many wrong codes. Try again in \(refusal.retryAfterSeconds) seconds." } else {
                    "That code does not match. Check the time on your phone and enter the code it shows now."
                }
            return try await renderTwoFactor(context: context, setup: codes, codeError: problem, status: .badRequest)
        }
        let recoveryCodes = RecoveryCodes.generate()
        guard
            try await store.enableTwoFactor(
                of: member.id,
                pending: sealed,
                usedStep: step,
                recoveryCodes: recoveryCodes.map { twoFactor.recoveryDigest($0, for: member.id) },
                keepingSession: context.signedIn.session.digest,
                audit: .member(.twoFactorEnabled, member, at: Date(), context: audit(request, context))
            )
        else { throw DashboardRedirect(location: "/dashboard/settings/two-factor") }
        context.logger.info("two-factor sign-in turned on", metadata: ["member.id": "\(member.id)"])
        return try await renderTwoFactor(context: context, enabledNow: true, recoveryCodes: recoveryCodes)
    }

    /// Turns the second factor off, after a current code; not while the account requires one.
    @Sendable func disableTwoFactor(_ request: Request, context: SignedInRequestContext) async throws -> Response {
        guard !context.account.policy.requireTwoFactor else {
            return try await renderTwoFactor(
                context: context,
                codeError: "\(context.account.name) requires two-factor sign-in, so it stays on.",
                status: .conflict
            )
        }
        if let problem = try await recheckCode(context.form["code"] ?? "", context: context) {
            return try await renderTwoFactor(context: context, codeError: problem, status: .badRequest)
        }
        _ = try await store.disableTwoFactor(
            of: context.member.id,
            keepingSession: context.signedIn.session.digest,
            audit: .member(.twoFactorDisabled, context.member, at: Date(), context: audit(request, context))
        )
        throw DashboardRedirect(location: "/dashboard/settings/two-factor")
    }

    /// Checks a second factor re-entered before a sensitive action — a code from the app or a
    /// recovery code, each used once — throttled per session.
    /// - Returns: What to tell the member, or `nil` when it is right.
    func recheckCode(_ typed: String, context: SignedInRequestContext) async throws -> String? {
        guard !typed.isEmpty else { return "Enter the code from your authenticator app, or a recovery code." }
        let member = context.member.id
        let check = try await signInPolicy.confirmInSession(context.signedIn.session.digest) {
            try await acceptSecondFactor(typed, of: member) != nil
        }
        if case .throttled(let refusal) = check { return "Too many wrong codes. Try again in \(refusal.retryAfterSeconds) seconds." }
        return Self.problem(check).map { _ in "That code is wrong or was used already." }
    }

    /// The member's password, or their code when they sign in with one: what a production key asks for.
    func recheckIdentity(context: SignedInRequestContext) async throws -> String? {
        if context.member.hasTwoFactor { return try await recheckCode(context.form["code"] ?? "", context: context) }
        return try await recheckPassword(context.form["password"] ?? "", context: context)
    }

    func renderTwoFactor(
        context: SignedInRequestContext,
        setup: TwoFactorCodes? = nil,
        enabledNow: Bool = false,
        recoveryCodes: [String] = [],
        codeError: String? = nil,
        notice: String? = nil,
        status: HTTPResponse.Status = .ok
    ) async throws -> Response {
        let record = try await store.twoFactor(of: context.member.id)
        var data: [String: Any] = [
            "enabled": record != nil,
            "required": context.account.policy.requireTwoFactor,
            "company": context.account.name,
        ]
        if let record { data["recoveryCodesLeft"] = record.recoveryCodesLeft }
        if let setup {
            let uri = setup.authenticatorURI(account: context.member.email, issuer: "Keyway")
            data["setup"] = [
                "qr": QRCodeSVG.render(uri, label: "QR code for your authenticator app") ?? "",
                "secret": setup.manualEntry,
            ]
        }
        if enabledNow {
            data["showRecoveryCodes"] = true
            data["recoveryCodes"] = recoveryCodes.map { ["code": $0] }
        }
        if let codeError { data["codeError"] = codeError }
        return pages.render(
            "two-factor",
            title: "Two-factor sign-in",
            section: .account,
            csrf: context.csrfToken,
            signedIn: context.signedIn,
            notice: notice,
            data: data,
            status: status
        )
    }
}
