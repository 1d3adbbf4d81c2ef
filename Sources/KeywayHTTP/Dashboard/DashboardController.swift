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
    /// Failed sign-ins (and password re-checks) per email address.
    let accountThrottle = AttemptThrottle(policy: .perAccount)
    /// Failed sign-ins and sign-ups per client address.
    let clientThrottle = AttemptThrottle(policy: .perClient)
    /// A bcrypt hash to check unknown emails against, so their answer takes as long as a real one.
    private let decoyHash = DecoyHash()
    /// The throttles' clock.
    let now: @Sendable () -> Date

    static let pageSize = 25

    init(
        store: any KeywayStore,
        keys: SecretKeys,
        hasher: any PasswordHasher,
        secureCookies: Bool,
        egressIPs: [String],
        now: @escaping @Sendable () -> Date
    ) {
        self.now = now
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
        // Every sign-up costs a bcrypt, so they are throttled per client before any work.
        let clientKey = "signup:" + context.remoteAddress
        do {
            try clientThrottle.check(clientKey, at: now())
        } catch {
            data["formError"] = "Too many sign-ups from your network. Try again in \(error.retryAfterSeconds) seconds."
            return page(status: .tooManyRequests)
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
        clientThrottle.recordFailure(clientKey, at: now())
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
        let email = (try? MemberInput.email(typedEmail)) ?? typedEmail.lowercased()
        let password = context.form["password"] ?? ""
        let accountKey = "signin:" + email
        let clientKey = "signin:" + context.remoteAddress
        // Checked before the password hash, so a flood of attempts costs no bcrypt.
        do {
            try accountThrottle.check(accountKey, at: now())
            try clientThrottle.check(clientKey, at: now())
        } catch {
            context.logger.notice("sign-in throttled", metadata: ["locked": "\(error.lockedOut)"])
            let wait = error.retryAfterSeconds
            return page(
                "Too many failed sign-ins. Try again in \(wait) second\(wait == 1 ? "" : "s")\(error.lockedOut ? "; the account is locked for a while" : "").",
                status: .tooManyRequests
            )
        }
        let credentials = try await store.memberCredentials(email: email)
        let hash: String
        if let stored = credentials?.passwordHash { hash = stored } else { hash = try await decoy() }
        let valid = try await hasher.verify(password, hash: hash)
        guard let member = credentials?.member, valid, !password.isEmpty else {
            accountThrottle.recordFailure(accountKey, at: now())
            clientThrottle.recordFailure(clientKey, at: now())
            return page("The email or password is wrong.", status: .unauthorized)
        }
        accountThrottle.reset(accountKey)
        context.logger.info("member signed in", metadata: ["member.id": "\(member.id)"])
        var response = Response(status: .seeOther, headers: [.location: "/dashboard/settings/api-keys"])
        response.setCookie(try await sessions.start(for: member))
        return response
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

    /// Checks the signed-in member's password again, throttled like a sign-in.
    /// - Returns: What to tell the member, or `nil` when the password is right.
    private func recheckPassword(_ password: String, context: SignedInRequestContext) async throws -> String? {
        let accountKey = "signin:" + context.member.email
        do {
            try accountThrottle.check(accountKey, at: now())
        } catch {
            return "Too many wrong passwords. Try again in \(error.retryAfterSeconds) seconds."
        }
        guard !password.isEmpty, let hash = try await store.passwordHash(of: context.member.id), try await hasher.verify(password, hash: hash)
        else {
            accountThrottle.recordFailure(accountKey, at: now())
            return password.isEmpty ? "Enter your password to generate the production key." : "That password is wrong."
        }
        accountThrottle.reset(accountKey)
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
        let query = request.uri.queryParameters
        let environment = query["environment"].flatMap { Environment(rawValue: String($0)) } ?? .development
        let environmentID = EnvironmentID(accountID: context.account.id, environment: environment)
        let search = UserInput.normalized(String(query["q"] ?? "").trimmingCharacters(in: .whitespaces))
        let after = query["after"].map(String.init).flatMap { $0.isEmpty ? nil : $0 }
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
        let reference = UserInput.normalized((context.parameters.get("user") ?? "").removingPercentEncoding ?? "")
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
