import Foundation
import Hummingbird
import KeywayCore

/// Creates, reads and ends dashboard sessions and their cookies.
struct DashboardSessions: Sendable {
    /// How long a sign-in lasts.
    static let lifetime: Duration = .seconds(12 * 3600)
    /// How long a right password waits for its second factor.
    static let secondFactorWindow: TimeInterval = 5 * 60

    let store: any KeywayStore
    /// Whether cookies get the `Secure` attribute: when Keyway is served over https.
    let secureCookies: Bool

    /// Over https the cookies are `__Host-` cookies: browsers then refuse them unless they are
    /// `Secure`, for `Path=/` and without `Domain`, so neither a sibling subdomain nor a page
    /// served over http can plant or overwrite one. Browsers refuse the prefix over http.
    var sessionCookie: String { secureCookies ? "__Host-keyway_session" : "keyway_session" }
    var csrfCookie: String { secureCookies ? "__Host-keyway_csrf" : "keyway_csrf" }
    /// `__Host-` requires `/`; over http the cookies stay with the dashboard.
    private var cookiePath: String { secureCookies ? "/" : "/dashboard" }

    /// Starts a session for `member`; returns the cookie that carries it. One `awaitingSecondFactor`
    /// opens only the code page, for ``secondFactorWindow``, and is no sign-in until the code.
    func start(for member: Member, awaitingSecondFactor: Bool = false, audit: AuditContext, at date: Date = Date()) async throws -> Cookie {
        let (token, digest) = BrowserToken.generate()
        let lasts = awaitingSecondFactor ? Self.secondFactorWindow : Double(Self.lifetime.components.seconds)
        let session = DashboardSession(
            digest: digest,
            memberID: member.id,
            accountID: member.accountID,
            secondFactorPending: awaitingSecondFactor,
            csrfToken: BrowserToken.random(),
            createdAt: date.keywayPrecision,
            expiresAt: date.addingTimeInterval(lasts).keywayPrecision
        )
        try await store.createSession(
            session,
            audit: awaitingSecondFactor ? nil : .member(.signedIn, member, at: session.createdAt, context: audit)
        )
        return Cookie(
            name: sessionCookie,
            value: token,
            maxAge: Int(Self.lifetime.components.seconds),
            path: cookiePath,
            secure: secureCookies,
            httpOnly: true,
            sameSite: .lax
        )
    }

    /// What a session cookie opens.
    enum Found {
        case signedIn(SignedIn)
        /// The password was right; the code is still to come.
        case awaitingSecondFactor(DashboardSession, Member)
    }

    /// The live session a token belongs to, and its member.
    func find(token: String, at date: Date = Date()) async throws -> Found? {
        guard token.utf8.count == 43 else { return nil }
        guard let session = try await store.session(digest: KeyDigest(hashing: token.utf8), at: date),
            let member = try await store.member(session.memberID, in: session.accountID)
        else { return nil }
        if session.secondFactorPending { return .awaitingSecondFactor(session, member) }
        guard let account = try await store.account(session.accountID) else { return nil }
        var accounts: [(id: AccountID, name: String)] = []
        for membership in try await store.memberships(of: member.id) {
            if membership.accountID == account.id {
                accounts.append((account.id, account.name))
            } else if let other = try await store.account(membership.accountID) {
                accounts.append((other.id, other.name))
            }
        }
        return .signedIn(SignedIn(session: session, member: member, account: account, accounts: accounts))
    }

    /// Ends a session's wait for its second factor: from now it is a sign-in of the full lifetime.
    /// - Parameter factor: What completed it, for the audit entry: `totp` or `recovery code`.
    func completeSecondFactor(
        _ session: DashboardSession,
        of member: Member,
        factor: String,
        audit: AuditContext,
        at date: Date = Date()
    ) async throws -> Bool {
        try await store.completeSecondFactor(
            digest: session.digest,
            at: date,
            expiresAt: date.addingTimeInterval(Double(Self.lifetime.components.seconds)).keywayPrecision,
            audit: .member(.signedIn, member, at: date.keywayPrecision, context: audit, details: ["secondFactor": factor])
        )
    }

    /// Ends a session; returns the cookie that clears it in the browser.
    func end(_ signedIn: SignedIn, audit: AuditContext) async throws -> Cookie {
        try await store.deleteSession(digest: signedIn.session.digest, audit: .member(.signedOut, signedIn.member, at: Date(), context: audit))
        return Cookie(name: sessionCookie, value: "", maxAge: 0, path: cookiePath, secure: secureCookies, httpOnly: true, sameSite: .lax)
    }

    /// The double-submit cookie that protects the sign-in and sign-up forms.
    func anonymousCSRFCookie(_ token: String) -> Cookie {
        Cookie(name: csrfCookie, value: token, path: cookiePath, secure: secureCookies, httpOnly: true, sameSite: .strict)
    }
}
