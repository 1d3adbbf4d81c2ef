import Foundation
import HTTPTypes
import Hummingbird
import KeywayCore
import Logging

/// The dashboard: sign-up and sign-in, Users, and Settings (API Keys, Rate limits, Audit log,
/// Webhooks, IP addresses, Account). Server-rendered; everything it needs ships in the binary.
struct DashboardController: Sendable {
    let store: any KeywayStore
    let keys: SecretKeys
    /// Each environment's request limit, shown and changed on Settings → API Keys.
    let rateLimits: RateLimits
    /// Endpoints and deliveries (Settings → Webhooks); `nil` when the server runs none.
    let webhooks: Webhooks?
    let sessions: DashboardSessions
    /// Seals and opens members' TOTP secrets.
    let twoFactor: TwoFactorSecrets
    /// The clock TOTP codes are computed at (tests move it by hand).
    let now: @Sendable () -> Date
    /// Every password hash and sign-in throttle; the handlers map its outcomes to pages.
    let signInPolicy: SignInPolicy
    let egressIPs: [String]
    /// `KEYWAY_PUBLIC_URL`, which invitation links start with; the request's host when unset.
    let publicURL: String?
    let pages = DashboardPages.bundled
    /// Which peers may name the client in a forwarding header.
    let trustedProxies: TrustedProxies

    static let pageSize = 25

    init(
        store: any KeywayStore,
        keys: SecretKeys,
        hasher: any PasswordHasher,
        twoFactorSecrets: TwoFactorSecrets,
        secureCookies: Bool,
        publicURL: String? = nil,
        egressIPs: [String],
        trustedProxies: TrustedProxies,
        throttleEntries: Int,
        attemptLedger: (any AttemptLedger)?,
        rateLimits: RateLimits,
        webhooks: Webhooks?,
        now: @escaping @Sendable () -> Date
    ) {
        self.rateLimits = rateLimits
        self.twoFactor = twoFactorSecrets
        self.now = now
        self.webhooks = webhooks
        self.signInPolicy = SignInPolicy(store: store, hasher: hasher, throttleCapacity: throttleEntries, ledger: attemptLedger, now: now)
        self.trustedProxies = trustedProxies
        self.store = store
        self.keys = keys
        self.sessions = DashboardSessions(store: store, secureCookies: secureCookies)
        self.egressIPs = egressIPs
        self.publicURL = publicURL.map { $0.hasSuffix("/") ? String($0.dropLast()) : $0 }
    }

    /// The dashboard under `/dashboard`, and `/`, which leads to it.
    var endpoints: RouteCollection<KeywayRequestContext> {
        let routes = RouteCollection(context: KeywayRequestContext.self)
        routes.get("/") { _, _ in Response(status: .seeOther, headers: [.location: "/dashboard"]) }
        let dashboard = routes.group("dashboard", context: DashboardRequestContext.self)
            .add(middleware: DashboardResponseMiddleware(pages: pages))
            .add(middleware: DashboardSessionMiddleware(sessions: sessions))
            .add(middleware: CSRFMiddleware())
        dashboard.get(use: home)
        dashboard.get("static/:file", use: staticFile)
        dashboard.get("signup", use: signUpPage)
        dashboard.post("signup", use: signUp)
        dashboard.get("signin", use: signInPage)
        dashboard.post("signin", use: signIn)
        dashboard.get("signin/code", use: codePage)
        dashboard.post("signin/code", use: submitCode)

        // Signed in or not: an invitation link is for someone new or a member of another account.
        dashboard.get("join", use: joinPage)
        dashboard.post("join", use: join)

        let signedIn = dashboard.group(context: SignedInRequestContext.self)
        signedIn.post("signout", use: signOut)
        signedIn.post("switch-account", use: switchAccount)
        signedIn.get("settings/members", use: membersPage)
        signedIn.post("settings/members/invitations", use: inviteMember)
        signedIn.post("settings/members/invitations/:id/revoke", use: revokeInvitation)
        signedIn.post("settings/members/policy", use: setAccountPolicy)
        signedIn.post("settings/members/:id/role", use: changeRole)
        signedIn.post("settings/members/:id/remove", use: removeMember)
        signedIn.get("settings/api-keys", use: keysPage)
        signedIn.post("settings/api-keys/:environment", use: generateKey)
        signedIn.post("settings/api-keys/:environment/roll", use: rollKey)
        signedIn.get("settings/rate-limits", use: rateLimitsPage)
        signedIn.post("settings/rate-limits/:environment", use: setRateLimit)
        signedIn.get("settings/audit-log", use: auditLogPage)
        signedIn.get("settings/webhooks", use: webhooksPage)
        signedIn.post("settings/webhooks/:environment", use: addWebhookEndpoint)
        signedIn.post("settings/webhooks/endpoints/:id/rotate", use: rotateWebhookSecret)
        signedIn.post("settings/webhooks/endpoints/:id/state", use: setWebhookEndpointState)
        signedIn.post("settings/webhooks/endpoints/:id/delete", use: deleteWebhookEndpoint)
        signedIn.post("settings/webhooks/deliveries/:id/resend", use: resendWebhookDelivery)
        signedIn.get("users", use: usersPage)
        signedIn.get("users/:user", use: userPage)
        signedIn.get("settings/ip-addresses", use: ipAddressesPage)
        signedIn.get("settings/account", use: accountPage)
        signedIn.post("settings/account/password", use: changePassword)
        signedIn.get("settings/two-factor", use: twoFactorPage)
        signedIn.post("settings/two-factor/setup", use: beginTwoFactorSetup)
        signedIn.post("settings/two-factor/confirm", use: confirmTwoFactor)
        signedIn.post("settings/two-factor/disable", use: disableTwoFactor)
        dashboard.get("**") { _, _ -> Response in throw DashboardErrorPage.notFound }
        return routes
    }

    // MARK: Static files

    @Sendable func staticFile(_ request: Request, context: DashboardRequestContext) throws -> Response {
        guard let name = context.parameters.get("file"), let file = pages.staticFiles[name] else { throw DashboardErrorPage.notFound }
        return Response(status: .ok, headers: [.contentType: file.contentType], body: .init(byteBuffer: ByteBuffer(bytes: file.bytes)))
    }
}

extension Environment {
    /// "Development" or "Production".
    var label: String { rawValue.prefix(1).uppercased() + rawValue.dropFirst() }
}
