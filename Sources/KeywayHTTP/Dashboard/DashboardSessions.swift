import Foundation
import Hummingbird
import KeywayCore

/// Creates, reads and ends dashboard sessions and their cookies.
struct DashboardSessions: Sendable {
    static let sessionCookie = "keyway_session"
    static let csrfCookie = "keyway_csrf"
    /// How long a sign-in lasts.
    static let lifetime: Duration = .seconds(12 * 3600)

    let store: any KeywayStore
    /// Whether cookies get the `Secure` attribute: when Keyway is served over https.
    let secureCookies: Bool

    /// Starts a session for `member`; returns the cookie that carries it.
    func start(for member: Member, at date: Date = Date()) async throws -> Cookie {
        let (token, digest) = BrowserToken.generate()
        let session = DashboardSession(
            digest: digest,
            memberID: member.id,
            csrfToken: BrowserToken.random(),
            createdAt: date.keywayPrecision,
            expiresAt: date.addingTimeInterval(Double(Self.lifetime.components.seconds)).keywayPrecision
        )
        try await store.createSession(session)
        return Cookie(
            name: Self.sessionCookie,
            value: token,
            maxAge: Int(Self.lifetime.components.seconds),
            path: "/dashboard",
            secure: secureCookies,
            httpOnly: true,
            sameSite: .lax
        )
    }

    /// The member a session token belongs to, if the session is live.
    func signedIn(token: String, at date: Date = Date()) async throws -> SignedIn? {
        guard token.utf8.count == 43 else { return nil }
        guard let session = try await store.session(digest: KeyDigest(hashing: token.utf8), at: date),
            let member = try await store.member(session.memberID),
            let account = try await store.account(member.accountID)
        else { return nil }
        return SignedIn(session: session, member: member, account: account)
    }

    /// Ends a session; returns the cookie that clears it in the browser.
    func end(_ session: DashboardSession) async throws -> Cookie {
        try await store.deleteSession(digest: session.digest)
        return Cookie(name: Self.sessionCookie, value: "", maxAge: 0, path: "/dashboard", secure: secureCookies, httpOnly: true, sameSite: .lax)
    }

    /// The double-submit cookie that protects the sign-in and sign-up forms.
    func anonymousCSRFCookie(_ token: String) -> Cookie {
        Cookie(name: Self.csrfCookie, value: token, path: "/dashboard", secure: secureCookies, httpOnly: true, sameSite: .strict)
    }
}
