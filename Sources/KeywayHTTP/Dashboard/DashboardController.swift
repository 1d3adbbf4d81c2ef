import Foundation
import HTTPTypes
import Hummingbird
import KeywayCore
import Logging
import Synchronization

/// The dashboard: sign-up and sign-in, Settings → API Keys, Users, IP addresses
/// and Account. Server-rendered; everything it needs ships in the binary.
struct DashboardController: Sendable {
    let store: any KeywayStore
    let keys: SecretKeys
    /// Each environment's request limit, shown and changed on Settings → API Keys.
    let rateLimits: RateLimits
    let sessions: DashboardSessions
    let hasher: any PasswordHasher
    let egressIPs: [String]
    let pages = DashboardPages.bundled
    /// Failed sign-ins per email address.
    let accountThrottle: AttemptLimiter
    /// Failed sign-ins and sign-ups per client address.
    let clientThrottle: AttemptLimiter
    /// Wrong passwords re-entered per signed-in session: apart from the email's, so
    /// that someone who fails sign-ins with the owner's email cannot lock the owner
    /// out of regenerating a leaked production key.
    let sessionThrottle: AttemptLimiter
    /// Which peers may name the client in a forwarding header.
    let trustedProxies: TrustedProxies
    /// A bcrypt hash to check unknown emails against, so their answer takes as long as a real one.
    let decoyHash = DecoyHash()

    static let pageSize = 25

    init(
        store: any KeywayStore,
        keys: SecretKeys,
        hasher: any PasswordHasher,
        secureCookies: Bool,
        egressIPs: [String],
        trustedProxies: TrustedProxies,
        throttleEntries: Int,
        attemptLedger: (any AttemptLedger)?,
        rateLimits: RateLimits,
        now: @escaping @Sendable () -> Date
    ) {
        self.rateLimits = rateLimits
        self.accountThrottle = AttemptLimiter(policy: .perAccount, capacity: throttleEntries, ledger: attemptLedger, now: now)
        self.clientThrottle = AttemptLimiter(policy: .perClient, capacity: throttleEntries, ledger: attemptLedger, now: now)
        self.sessionThrottle = AttemptLimiter(policy: .perSession, capacity: throttleEntries, ledger: attemptLedger, now: now)
        self.trustedProxies = trustedProxies
        self.store = store
        self.keys = keys
        self.sessions = DashboardSessions(store: store, secureCookies: secureCookies)
        self.hasher = hasher
        self.egressIPs = egressIPs
    }

    /// Adds the dashboard under `/dashboard`.
    func register(on router: Router<KeywayRequestContext>) {
        router.get("/") { _, _ in Response(status: .seeOther, headers: [.location: "/dashboard"]) }
        let dashboard = router.group("dashboard", context: DashboardRequestContext.self)
            .add(middleware: DashboardResponseMiddleware(pages: pages))
            .add(middleware: DashboardSessionMiddleware(sessions: sessions))
            .add(middleware: CSRFMiddleware())
        dashboard.get(use: home)
        dashboard.get("static/:file", use: staticFile)
        dashboard.get("signup", use: signUpPage)
        dashboard.post("signup", use: signUp)
        dashboard.get("signin", use: signInPage)
        dashboard.post("signin", use: signIn)

        let signedIn = dashboard.group(context: SignedInRequestContext.self)
        signedIn.post("signout", use: signOut)
        signedIn.get("settings/api-keys", use: keysPage)
        signedIn.post("settings/api-keys/:environment", use: generateKey)
        signedIn.post("settings/api-keys/:environment/limit", use: setRateLimit)
        signedIn.get("users", use: usersPage)
        signedIn.get("users/:user", use: userPage)
        signedIn.get("settings/ip-addresses", use: ipAddressesPage)
        signedIn.get("settings/account", use: accountPage)
        signedIn.post("settings/account/password", use: changePassword)
        dashboard.get("**") { _, _ -> Response in throw DashboardErrorPage.notFound }
    }

    // MARK: Static files

    @Sendable func staticFile(_ request: Request, context: DashboardRequestContext) throws -> Response {
        guard let name = context.parameters.get("file"), let file = pages.staticFiles[name] else { throw DashboardErrorPage.notFound }
        return Response(status: .ok, headers: [.contentType: file.contentType], body: .init(byteBuffer: ByteBuffer(bytes: file.bytes)))
    }
}

/// Made on first use: hashing at start-up would delay every start by a bcrypt.
final class DecoyHash: Sendable {
    let value = Mutex<String?>(nil)
}

extension Environment {
    /// "Development" or "Production".
    var label: String { rawValue.prefix(1).uppercased() + rawValue.dropFirst() }
}
