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
    private let decoyHash = DecoyHash()

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
        now: @escaping @Sendable () -> Date
    ) {
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
        signedIn.get("users", use: usersPage)
        signedIn.get("users/:user", use: userPage)
        signedIn.get("settings/ip-addresses", use: ipAddressesPage)
        signedIn.get("settings/account", use: accountPage)
        signedIn.post("settings/account/password", use: changePassword)
        dashboard.get("**") { _, _ -> Response in throw DashboardErrorPage.notFound }
    }

    // MARK: Signing up, in and out

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
    private func clientKey(_ request: Request, _ peer: String) -> String {
        trustedProxies.clientKey(peer: peer, headers: request.headers)
    }

    /// Reserves an attempt with each limiter, or none: when one refuses, those made are released.
    private func reserve(_ attempts: [(AttemptLimiter, String)]) async throws -> [(AttemptLimiter, AttemptThrottle.Reservation)] {
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
    private func release(_ reservations: [(AttemptLimiter, AttemptThrottle.Reservation)]) async {
        for (limiter, reservation) in reservations { try? await limiter.release(reservation) }
    }

    @Sendable func signOut(_ request: Request, context: SignedInRequestContext) async throws -> Response {
        var response = Response(status: .seeOther, headers: [.location: "/dashboard/signin?notice=signed-out"])
        response.setCookie(try await sessions.end(context.signedIn.session))
        return response
    }

    private func decoy() async throws -> String {
        if let hash = decoyHash.value.withLock({ $0 }) { return hash }
        let hash = try await hasher.hash(BrowserToken.random())
        decoyHash.value.withLock { $0 = hash }
        return hash
    }

    // MARK: Settings → API Keys

    @Sendable func keysPage(_ request: Request, context: SignedInRequestContext) async throws -> Response {
        let confirming = request.uri.queryParameters["confirm"].flatMap { Environment(rawValue: String($0)) }
        let notice: String? =
            request.uri.queryParameters["notice"] == "stale" ? "The key changed since that page was loaded, so nothing was generated." : nil
        return try await renderKeys(context: context, confirming: confirming, notice: notice)
    }

    @Sendable func generateKey(_ request: Request, context: SignedInRequestContext) async throws -> Response {
        guard let environment = context.parameters.get("environment").flatMap(Environment.init(rawValue:)) else {
            throw DashboardErrorPage.notFound
        }
        let environmentID = EnvironmentID(accountID: context.account.id, environment: environment)
        let active = try await activeKeys(context.account.id)[environment]
        // The form names the key it was shown with; a resubmitted form (a reload) regenerates nothing.
        guard context.form["current"] == (active?.id.rawValue ?? "none") else {
            throw DashboardRedirect(location: "/dashboard/settings/api-keys?notice=stale")
        }
        let needsConfirmation = active != nil || environment == .production
        guard !needsConfirmation || context.form["confirm"] == "yes" else {
            throw DashboardRedirect(location: "/dashboard/settings/api-keys?confirm=\(environment.rawValue)#\(environment.rawValue)-card")
        }
        if environment == .production {
            if let problem = try await recheckPassword(context.form["password"] ?? "", context: context) {
                return try await renderKeys(context: context, confirming: environment, passwordError: problem, status: .badRequest)
            }
        }
        let key: GeneratedSecretKey
        do {
            // Checked again in the store's transaction: two submissions of one page
            // (a double-click, two tabs) must not both generate, or one shows a dead key.
            key = try await keys.generate(for: environmentID, replacing: .only(active?.id), createdBy: context.member.email).key
        } catch let error as KeywayError where error.code == .activeKeyChanged {
            throw DashboardRedirect(location: "/dashboard/settings/api-keys?notice=stale")
        } catch let error as KeywayError where error.code == .tooManyKeyGenerations {
            context.logger.notice("key generation refused: limit reached", metadata: ["environment": "\(environment.rawValue)"])
            var response = try await renderKeys(context: context, notice: error.message, status: .tooManyRequests)
            response.headers[.retryAfter] = error.details["retryAfter"]
            return response
        }
        context.logger.info("key generated from the dashboard", metadata: ["environment": "\(environment.rawValue)", "key.hint": "\(key.hint)"])
        return try await renderKeys(context: context, revealed: key)
    }

    /// Checks the signed-in member's password again, throttled per session (not per email:
    /// anyone can fail sign-ins with the owner's email, and must not block the owner here).
    /// - Returns: What to tell the member, or `nil` when the password is right.
    private func recheckPassword(_ password: String, context: SignedInRequestContext) async throws -> String? {
        if password.isEmpty { return "Enter your password to continue." }
        // No member has such a password; refused unhashed and uncounted.
        guard MemberInput.unusablePassword(password) == nil else { return "That password is wrong." }
        let sessionKey = "reauth-session:" + context.signedIn.session.digest.bytes.map { String(format: "%02x", $0) }.joined()
        let reservation: AttemptThrottle.Reservation
        do {
            reservation = try await sessionThrottle.reserve(sessionKey)
        } catch let refusal as AttemptThrottle.Refusal {
            return "Too many wrong passwords. Try again in \(refusal.retryAfterSeconds) seconds."
        }
        let valid: Bool
        do {
            guard let hash = try await store.passwordHash(of: context.member.id) else { return "That password is wrong." }
            valid = try await hasher.verify(password, hash: hash)
        } catch {
            await release([(sessionThrottle, reservation)])
            throw error
        }
        guard valid else { return "That password is wrong." }
        try await sessionThrottle.reset(sessionKey)
        return nil
    }

    private func activeKeys(_ account: AccountID) async throws -> [Environment: SecretKeyRecord] {
        var active: [Environment: SecretKeyRecord] = [:]
        for record in try await store.secretKeys(for: account) where record.isActive {
            active[record.environmentID.environment] = record
        }
        return active
    }

    private func renderKeys(
        context: SignedInRequestContext,
        confirming: Environment? = nil,
        revealed: GeneratedSecretKey? = nil,
        passwordError: String? = nil,
        notice: String? = nil,
        status: HTTPResponse.Status = .ok
    ) async throws -> Response {
        let active = try await activeKeys(context.account.id)
        let environments: [[String: Any]] = Environment.allCases.map { environment in
            var card: [String: Any] = [
                "environment": environment.rawValue,
                "label": environment.label,
                "lowercaseLabel": environment.rawValue,
                "isProduction": environment == .production,
                "current": active[environment]?.id.rawValue ?? "none",
                "csrf": context.csrfToken,
            ]
            if let record = active[environment] {
                card["exists"] = true
                card["hint"] = record.hint
                card["createdAt"] = DashboardPages.display(record.createdAt)
                card["createdBy"] = record.createdBy
                card["lastUsed"] = record.lastUsedAt.map(DashboardPages.display) ?? "never"
            }
            if confirming == environment { card["confirming"] = true }
            if let passwordError, confirming == environment { card["passwordError"] = passwordError }
            // The only place a key's plaintext is ever rendered: this one response.
            if let revealed, revealed.environment == environment { card["revealed"] = revealed.revealPlaintext() }
            return card
        }
        return pages.render(
            "api-keys",
            title: "API Keys",
            section: .keys,
            csrf: context.csrfToken,
            signedIn: context.signedIn,
            notice: notice,
            data: ["environments": environments],
            status: status
        )
    }

    // MARK: Users

    @Sendable func usersPage(_ request: Request, context: SignedInRequestContext) async throws -> Response {
        // The search is a GET form: its query is form-encoded, where `+` is a space.
        let query = HTMLForm(urlEncoded: request.uri.query ?? "")
        let environment = query["environment"].flatMap { Environment(rawValue: $0) } ?? .development
        let environmentID = EnvironmentID(accountID: context.account.id, environment: environment)
        let search = UserInput.normalized((query["q"] ?? "").trimmingCharacters(in: .whitespaces))
        let after = query["after"].flatMap { $0.isEmpty ? nil : $0 }
        let found = try await store.users(in: environmentID, usernamePrefix: search, afterUsername: after, limit: Self.pageSize + 1)
        let total = try await store.countUsers(in: environmentID, usernamePrefix: "")
        let matching = search.isEmpty ? total : try await store.countUsers(in: environmentID, usernamePrefix: search)
        let shown = Array(found.prefix(Self.pageSize))

        func link(after: String?) -> String {
            var components = URLComponents()
            components.path = "/dashboard/users"
            components.queryItems = [URLQueryItem(name: "environment", value: environment.rawValue)]
            if !search.isEmpty { components.queryItems?.append(URLQueryItem(name: "q", value: search)) }
            if let after { components.queryItems?.append(URLQueryItem(name: "after", value: after)) }
            return components.string ?? "/dashboard/users"
        }
        let noun = { (count: Int) in count == 1 ? "1 user" : "\(count) users" }
        var data: [String: Any] = [
            "environment": environment.rawValue,
            "label": environment.label,
            "query": search,
            "countText": search.isEmpty
                ? "\(noun(total)) in \(environment.rawValue)."
                : "\(noun(matching)) of \(total) in \(environment.rawValue) start with “\(search)”.",
            "switch": Environment.allCases.map { ["environment": $0.rawValue, "label": $0.label, "current": $0 == environment] },
            "hasUsers": !shown.isEmpty,
            "users": shown.map { user in
                [
                    "userId": user.id.rawValue, "username": user.username, "fullName": user.fullName ?? "—",
                    "createdAt": DashboardPages.display(user.createdAt), "environment": environment.rawValue,
                ]
            },
        ]
        if found.count > Self.pageSize, let last = shown.last { data["nextPage"] = link(after: last.username) }
        if after != nil { data["firstPage"] = link(after: nil) }
        return pages.render(
            "users",
            title: "\(environment.label) users",
            section: .users,
            csrf: context.csrfToken,
            signedIn: context.signedIn,
            data: data
        )
    }

    @Sendable func userPage(_ request: Request, context: SignedInRequestContext) async throws -> Response {
        let environment = request.uri.queryParameters["environment"].flatMap { Environment(rawValue: String($0)) } ?? .development
        guard let reference = UsersController.userReference(inPath: context.parameters.get("user") ?? "") else {
            throw DashboardErrorPage(status: .badRequest, title: "Not a user", message: "That address does not name a user.")
        }
        guard let user = try await store.user(reference, in: EnvironmentID(accountID: context.account.id, environment: environment)) else {
            throw DashboardErrorPage(status: .notFound, title: "No such user", message: "There is no user '\(reference)' in \(environment.rawValue).")
        }
        return pages.render(
            "user",
            title: user.username,
            section: .users,
            csrf: context.csrfToken,
            signedIn: context.signedIn,
            data: [
                "userId": user.id.rawValue, "username": user.username, "fullName": user.fullName ?? "—",
                "createdAt": DashboardPages.display(user.createdAt), "environment": environment.rawValue, "label": environment.label,
            ]
        )
    }

    // MARK: IP addresses and account

    @Sendable func ipAddressesPage(_ request: Request, context: SignedInRequestContext) -> Response {
        pages.render(
            "ip-addresses",
            title: "IP addresses",
            section: .ipAddresses,
            csrf: context.csrfToken,
            signedIn: context.signedIn,
            data: ["hasAddresses": !egressIPs.isEmpty, "addressText": egressIPs.joined(separator: "\n"), "rows": max(2, egressIPs.count)]
        )
    }

    @Sendable func accountPage(_ request: Request, context: SignedInRequestContext) -> Response {
        renderAccount(context: context)
    }

    @Sendable func changePassword(_ request: Request, context: SignedInRequestContext) async throws -> Response {
        let newPassword: String
        do {
            newPassword = try MemberInput.newPassword(context.form["new"] ?? "")
        } catch {
            return renderAccount(context: context, errors: ["newError": error.message], status: .badRequest)
        }
        if let problem = try await recheckPassword(context.form["current"] ?? "", context: context) {
            return renderAccount(context: context, errors: ["currentError": problem], status: .badRequest)
        }
        try await store.changePassword(of: context.member.id, to: try await hasher.hash(newPassword))
        context.logger.info("password changed; sessions ended", metadata: ["member.id": "\(context.member.id)"])
        throw DashboardRedirect(location: "/dashboard/signin?notice=password-changed")
    }

    private func renderAccount(context: SignedInRequestContext, errors: [String: String] = [:], status: HTTPResponse.Status = .ok) -> Response {
        var data: [String: Any] = [
            "company": context.account.name, "accountId": context.account.id.rawValue, "email": context.member.email,
            "role": context.member.role.rawValue,
        ]
        data.merge(errors) { $1 }
        return pages.render(
            "account",
            title: "Account",
            section: .account,
            csrf: context.csrfToken,
            signedIn: context.signedIn,
            data: data,
            status: status
        )
    }

    // MARK: Static files

    @Sendable func staticFile(_ request: Request, context: DashboardRequestContext) throws -> Response {
        guard let name = context.parameters.get("file"), let file = pages.staticFiles[name] else { throw DashboardErrorPage.notFound }
        return Response(status: .ok, headers: [.contentType: file.contentType], body: .init(byteBuffer: ByteBuffer(bytes: file.bytes)))
    }
}

/// Made on first use: hashing at start-up would delay every start by a bcrypt.
private final class DecoyHash: Sendable {
    let value = Mutex<String?>(nil)
}

extension Environment {
    /// "Development" or "Production".
    var label: String { rawValue.prefix(1).uppercased() + rawValue.dropFirst() }
}
