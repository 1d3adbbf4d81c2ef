import Foundation
import HTTPTypes
import Hummingbird
import HummingbirdTesting
import KeywayCore
import KeywayHTTP
import Synchronization
import Testing

/// A password hasher that counts its calls and costs nothing, so tests can
/// prove when a password is (not) checked.
final class CountingHasher: PasswordHasher {
    private let counts = Mutex((hashes: 0, verifications: 0))
    var verifications: Int { counts.withLock { $0.verifications } }
    var hashes: Int { counts.withLock { $0.hashes } }

    func hash(_ password: String) async throws -> String {
        counts.withLock { $0.hashes += 1 }
        return "test-hash:" + password
    }

    func verify(_ password: String, hash: String) async throws -> Bool {
        counts.withLock { $0.verifications += 1 }
        return hash == "test-hash:" + password
    }
}

/// A browser for in-process tests: keeps cookies and reads each page's CSRF token.
final class TestBrowser: @unchecked Sendable {
    let client: any TestClientProtocol
    private(set) var cookies: [String: String] = [:]
    private(set) var lastPage = ""

    init(_ client: any TestClientProtocol) { self.client = client }

    /// What the audit log records as the browser's.
    static let userAgent = "KeywayTestBrowser/1.0"

    struct Page {
        let status: HTTPResponse.Status
        let headers: HTTPFields
        let html: String
        var location: String? { headers[.location] }
    }

    @discardableResult
    func get(_ uri: String) async throws -> Page {
        try await send(.get, uri, body: nil)
    }

    /// Submits a form, adding the CSRF token of the last page unless `csrf` says otherwise.
    @discardableResult
    func post(_ uri: String, _ fields: [String: String], csrf: String? = nil) async throws -> Page {
        var fields = fields
        fields["csrf"] = csrf ?? csrfToken(in: lastPage) ?? ""
        let body = fields.map { "\(escape($0.key))=\(escape($0.value))" }.joined(separator: "&")
        return try await send(.post, uri, body: body)
    }

    func csrfToken(in html: String) -> String? {
        guard let range = html.range(of: #"name="csrf" value=""#) else { return nil }
        return String(html[range.upperBound...].prefix { $0 != "\"" })
    }

    private func escape(_ text: String) -> String {
        text.addingPercentEncoding(withAllowedCharacters: .alphanumerics) ?? text
    }

    private func send(_ method: HTTPRequest.Method, _ uri: String, body: String?) async throws -> Page {
        var headers: HTTPFields = [.userAgent: Self.userAgent]
        if !cookies.isEmpty { headers[.cookie] = cookies.map { "\($0.key)=\($0.value)" }.joined(separator: "; ") }
        if body != nil { headers[.contentType] = "application/x-www-form-urlencoded" }
        let page = try await client.execute(uri: uri, method: method, headers: headers, body: body.map { ByteBuffer(string: $0) }) { response in
            Page(status: response.status, headers: response.headers, html: String(buffer: response.body))
        }
        for header in page.headers[values: .setCookie] {
            let pair = header.split(separator: ";")[0].split(separator: "=", maxSplits: 1, omittingEmptySubsequences: false)
            let name = String(pair[0])
            let value = pair.count > 1 ? String(pair[1]) : ""
            if value.isEmpty || header.contains("Max-Age=0") { cookies[name] = nil } else { cookies[name] = value }
        }
        if page.status == .ok || page.status.code >= 400 { lastPage = page.html }
        return page
    }

    /// Signs up and follows the redirect to the API Keys page.
    func signUp(email: String = "owner@acme.test", password: String = "correct horse battery", company: String = "Acme") async throws -> Page {
        try await get("/dashboard/signup")
        let response = try await post("/dashboard/signup", ["email": email, "password": password, "company": company])
        #expect(response.status == .seeOther, "sign-up: \(response.html)")
        return try await get(response.location ?? "/dashboard")
    }
}

@Suite struct DashboardTests {
    func withDashboard<Value: Sendable>(
        hasher: CountingHasher = CountingHasher(),
        _ body: @Sendable (TestServer, TestBrowser) async throws -> Value
    ) async throws -> Value {
        let server = try await TestServer.make(passwordHasher: hasher)
        return try await server.test { client in try await body(server, TestBrowser(client)) }
    }

    @Test func signingUpCreatesAnAccountAndASession() async throws {
        try await withDashboard { server, browser in
            let page = try await browser.signUp(email: "  Owner@Acme.TEST ", company: " Acme Rockets ")
            #expect(page.status == .ok)
            #expect(page.html.contains("<title>API Keys · Keyway</title>"))
            #expect(page.html.contains("Acme Rockets"))
            #expect(page.html.contains("owner@acme.test"), "emails are lowercased and trimmed")
            #expect(browser.cookies["keyway_session"] != nil)
            let credentials = try #require(try await server.store.memberCredentials(email: "owner@acme.test"))
            #expect(credentials.passwordHash == "test-hash:correct horse battery")
            #expect(try await server.store.account(credentials.member.accountID)?.name == "Acme Rockets")
        }
    }

    @Test func badSignUpsSayWhatIsWrongNextToTheField() async throws {
        try await withDashboard { server, browser in
            try await browser.get("/dashboard/signup")
            let page = try await browser.post("/dashboard/signup", ["email": "not-an-email", "password": "short", "company": ""])
            #expect(page.status == .badRequest)
            #expect(page.html.contains(#"id="email-error""#))
            #expect(page.html.contains(#"id="password-error""#))
            #expect(page.html.contains(#"id="company-error""#))
            #expect(page.html.contains(#"aria-invalid="true""#))
            #expect(try await server.store.accounts().count == 2, "nothing was created (the two are the fixture's)")

            _ = try await browser.signUp(email: "taken@acme.test")
            let again = TestBrowser(browser.client)
            try await again.get("/dashboard/signup")
            let taken = try await again.post("/dashboard/signup", ["email": "taken@acme.test", "password": "long enough pass", "company": "B"])
            #expect(taken.status == .conflict)
            #expect(taken.html.contains("already uses this email"))
        }
    }

    @Test func pagesNeedASessionAndSignOutEndsIt() async throws {
        try await withDashboard { server, browser in
            for path in ["/dashboard/settings/api-keys", "/dashboard/users", "/dashboard/settings/ip-addresses", "/dashboard/settings/account"] {
                let page = try await browser.get(path)
                #expect(page.status == .seeOther)
                #expect(page.location == "/dashboard/signin")
            }
            _ = try await browser.signUp()
            let session = try #require(browser.cookies["keyway_session"])
            #expect(try await browser.get("/dashboard/users").status == .ok)
            let signOut = try await browser.post("/dashboard/signout", [:])
            #expect(signOut.location == "/dashboard/signin?notice=signed-out")
            #expect(browser.cookies["keyway_session"] == nil)
            #expect(try await server.store.session(digest: KeyDigest(hashing: session.utf8), at: Date()) == nil, "the session is gone from storage")
            #expect(try await browser.get("/dashboard/users").location == "/dashboard/signin")
        }
    }

    @Test func sessionsSurviveARestart() async throws {
        let hasher = CountingHasher()
        let server = try await TestServer.make(passwordHasher: hasher)
        let cookie = try await server.test { client in
            let browser = TestBrowser(client)
            _ = try await browser.signUp()
            return try #require(browser.cookies["keyway_session"])
        }
        // A second application on the same database stands in for a restarted server.
        try await server.test { client in
            let page = try await client.execute(uri: "/dashboard/users", method: .get, headers: [.cookie: "keyway_session=\(cookie)"])
            #expect(page.status == .ok)
        }
    }

    @Test func changingThePasswordEndsEverySession() async throws {
        try await withDashboard { server, browser in
            _ = try await browser.signUp(password: "first password 1")
            let other = TestBrowser(browser.client)
            try await other.get("/dashboard/signin")
            #expect(try await other.post("/dashboard/signin", ["email": "owner@acme.test", "password": "first password 1"]).status == .seeOther)
            #expect(try await other.get("/dashboard/users").status == .ok)

            try await browser.get("/dashboard/settings/account")
            let wrong = try await browser.post("/dashboard/settings/account/password", ["current": "nope nope nope", "new": "second password 2"])
            #expect(wrong.status == .badRequest)
            #expect(wrong.html.contains(#"id="current-error""#))
            let changed = try await browser.post("/dashboard/settings/account/password", ["current": "first password 1", "new": "second password 2"])
            #expect(changed.location == "/dashboard/signin?notice=password-changed")
            #expect(try await browser.get("/dashboard/users").location == "/dashboard/signin")
            #expect(try await other.get("/dashboard/users").location == "/dashboard/signin", "other browsers are signed out too")

            let fresh = TestBrowser(browser.client)
            try await fresh.get("/dashboard/signin")
            #expect(try await fresh.post("/dashboard/signin", ["email": "owner@acme.test", "password": "first password 1"]).status == .unauthorized)
            #expect(try await fresh.post("/dashboard/signin", ["email": "owner@acme.test", "password": "second password 2"]).status == .seeOther)
        }
    }

    @Test func formsWithoutTheRightCSRFTokenAreRefusedAndChangeNothing() async throws {
        try await withDashboard { server, browser in
            _ = try await browser.signUp()
            try await browser.get("/dashboard/settings/api-keys")
            for token in ["", "wrong", String(repeating: "A", count: 43)] {
                let page = try await browser.post("/dashboard/settings/api-keys/development", ["current": "none"], csrf: token)
                #expect(page.status == .forbidden)
                #expect(page.html.contains("Form expired"))
            }
            let member = try #require(try await server.store.memberCredentials(email: "owner@acme.test")).member
            #expect(try await server.store.secretKeys(for: member.accountID).isEmpty)
            #expect(try await browser.post("/dashboard/signout", [:], csrf: "wrong").status == .forbidden)
            #expect(try await browser.get("/dashboard/users").status == .ok, "the refused sign-out did nothing")

            // A right token from another site's form is refused by its Origin.
            let token = try #require(browser.csrfToken(in: try await browser.get("/dashboard/settings/api-keys").html))
            let crossSite = try await browser.client.execute(
                uri: "/dashboard/signout",
                method: .post,
                headers: [
                    .cookie: "keyway_session=\(browser.cookies["keyway_session"]!)", .contentType: "application/x-www-form-urlencoded",
                    .origin: "https://evil.example",
                ],
                body: ByteBuffer(string: "csrf=\(token)")
            ) { $0.status }
            #expect(crossSite == .forbidden)
        }
    }

    @Test func signInFormsNeedTheirCSRFCookie() async throws {
        try await withDashboard { _, browser in
            let page = try await browser.client.execute(
                uri: "/dashboard/signin",
                method: .post,
                headers: [.contentType: "application/x-www-form-urlencoded"],
                body: ByteBuffer(string: "email=a%40b.test&password=x&csrf=guess")
            ) { $0.status }
            #expect(page == .forbidden)
        }
    }

    /// The waits run on the server's clock, which the test moves by hand: however slowly
    /// this machine sends the attempts, no time passes for the throttle between them.
    @Test func repeatedFailedSignInsAreRefusedBeforeAnyPasswordCheck() async throws {
        let hasher = CountingHasher()
        try await withDashboard(hasher: hasher) { server, browser in
            _ = try await browser.signUp(email: "victim@acme.test", password: "the real password")
            try await browser.post("/dashboard/signout", [:])
            try await browser.get("/dashboard/signin")
            var statuses: [HTTPResponse.Status] = []
            for attempt in 0..<5 {
                statuses.append(try await browser.post("/dashboard/signin", ["email": "victim@acme.test", "password": "guess \(attempt)"]).status)
            }
            #expect(statuses == Array(repeating: .unauthorized, count: 5))
            let verificationsBefore = hasher.verifications
            for attempt in 0..<20 {
                let page = try await browser.post("/dashboard/signin", ["email": "victim@acme.test", "password": "flood \(attempt)"])
                #expect(page.status == .tooManyRequests)
                #expect(page.html.contains("Too many failed sign-ins. Try again in"))
            }
            #expect(hasher.verifications == verificationsBefore, "throttled attempts computed no password hash")
            let right = try await browser.post("/dashboard/signin", ["email": "victim@acme.test", "password": "the real password"])
            #expect(right.status == .tooManyRequests, "even the right password waits out the throttle")
            // Other emails are not affected.
            let other = try await browser.post("/dashboard/signin", ["email": "someone@else.test", "password": "whatever pass"])
            #expect(other.status == .unauthorized)

            // Waits of 1, then 2 seconds: just before each ends the attempt is refused, just after it is checked.
            for wait in [1.0, 2.0] {
                server.clock.advance(by: wait - 0.1)
                #expect(try await browser.post("/dashboard/signin", ["email": "victim@acme.test", "password": "early"]).status == .tooManyRequests)
                server.clock.advance(by: 0.11)
                let checked = hasher.verifications
                #expect(try await browser.post("/dashboard/signin", ["email": "victim@acme.test", "password": "on time"]).status == .unauthorized)
                #expect(hasher.verifications == checked + 1)
            }
        }
    }

    @Test func aGeneratedKeyIsShownOnceAndWorks() async throws {
        try await withDashboard { server, browser in
            _ = try await browser.signUp()
            let before = try await browser.get("/dashboard/settings/api-keys")
            #expect(before.html.contains(#"id="development-none""#))
            let generated = try await browser.post("/dashboard/settings/api-keys/development", ["current": "none"])
            #expect(generated.status == .ok)
            let key = try #require(revealedKey(in: generated.html, environment: "development"))
            #expect(generated.html.contains("It will not be shown again"))
            #expect(generated.headers[.cacheControl] == "no-store")
            #expect(!generated.headers[values: .setCookie].contains { $0.contains(key) })

            // It works against the API.
            let whoami = try await browser.client.call(.get, "/whoami", key: key)
            #expect(whoami.status == .ok)
            #expect(whoami["environment"] as? String == "development")

            // Never shown again: not on reload, not on other pages.
            for path in ["/dashboard/settings/api-keys", "/dashboard/users", "/dashboard/settings/account"] {
                let page = try await browser.get(path)
                #expect(!page.html.contains(key), "\(path) shows the key again")
            }
            #expect(try await browser.get("/dashboard/settings/api-keys").html.contains(String(key.suffix(4))), "the hint is shown")

            // Submitting the same form again (a reload) generates nothing and shows nothing.
            try await browser.get("/dashboard/settings/api-keys")
            let resubmitted = try await browser.post("/dashboard/settings/api-keys/development", ["current": "none"])
            #expect(resubmitted.location == "/dashboard/settings/api-keys?notice=stale")
            #expect(try await browser.client.call(.get, "/whoami", key: key).status == .ok, "the key was not regenerated")
            let member = try #require(try await server.store.memberCredentials(email: "owner@acme.test")).member
            #expect(try await server.store.secretKeys(for: member.accountID).count == 1)
            #expect(try await server.store.secretKeys(for: member.accountID).first?.createdBy == "owner@acme.test")
        }
    }

    @Test(arguments: [1, 4])
    func concurrentSubmissionsOfOnePageShowExactlyOneKeyAndItWorks(alreadyGenerated: Int) async throws {
        try await withDashboard { server, browser in
            _ = try await browser.signUp()
            var fields = ["current": "none"]
            if alreadyGenerated > 0 {
                _ = try await browser.post("/dashboard/settings/api-keys/development", ["current": "none"])
                let page = try await browser.get("/dashboard/settings/api-keys")
                fields = ["current": try #require(hiddenField("current", in: page.html)), "confirm": "yes"]
            }
            let page = try await browser.get("/dashboard/settings/api-keys")
            fields["csrf"] = try #require(browser.csrfToken(in: page.html))
            let body = fields.map { "\($0.key)=\($0.value.addingPercentEncoding(withAllowedCharacters: .alphanumerics)!)" }.joined(separator: "&")
            var headers: HTTPFields = [.contentType: "application/x-www-form-urlencoded"]
            headers[.cookie] = browser.cookies.map { "\($0.key)=\($0.value)" }.joined(separator: "; ")
            // A double-click, two tabs: the same form posted at once.
            let pages = try await withThrowingTaskGroup(of: (HTTPResponse.Status, String).self) { group in
                for _ in 0..<4 {
                    group.addTask { [headers] in
                        try await browser.client.execute(
                            uri: "/dashboard/settings/api-keys/development",
                            method: .post,
                            headers: headers,
                            body: ByteBuffer(string: body)
                        ) { response in (response.status, String(buffer: response.body)) }
                    }
                }
                return try await group.reduce(into: []) { $0.append($1) }
            }
            let shown = pages.compactMap { revealedKey(in: $0.1, environment: "development") }
            #expect(shown.count == 1, "exactly one response shows a key")
            #expect(pages.filter { $0.0 == .seeOther }.count == 3, "the others say the key changed")
            let key = try #require(shown.first)
            #expect(try await browser.client.call(.get, "/whoami", key: key).status == .ok, "the key shown is the one that works")
        }
    }

    @Test func regeneratingAsksForConfirmationAndRevokesTheOldKey() async throws {
        try await withDashboard { server, browser in
            _ = try await browser.signUp()
            let first = try await browser.post("/dashboard/settings/api-keys/development", ["current": "none"])
            let oldKey = try #require(revealedKey(in: first.html, environment: "development"))
            let page = try await browser.get("/dashboard/settings/api-keys")
            let current = try #require(hiddenField("current", in: page.html))

            let unconfirmed = try await browser.post("/dashboard/settings/api-keys/development", ["current": current])
            #expect(unconfirmed.location?.hasPrefix("/dashboard/settings/api-keys?confirm=development") == true)
            let confirmPage = try await browser.get("/dashboard/settings/api-keys?confirm=development")
            #expect(confirmPage.html.contains("stops working immediately"))
            #expect(try await browser.client.call(.get, "/whoami", key: oldKey).status == .ok, "nothing happens without confirmation")

            let regenerated = try await browser.post("/dashboard/settings/api-keys/development", ["current": current, "confirm": "yes"])
            let newKey = try #require(revealedKey(in: regenerated.html, environment: "development"))
            #expect(newKey != oldKey)
            #expect(try await browser.client.call(.get, "/whoami", key: oldKey).code == "revoked_api_key")
            #expect(try await browser.client.call(.get, "/whoami", key: newKey).status == .ok)
        }
    }

    @Test func theProductionKeyNeedsThePasswordAgain() async throws {
        let hasher = CountingHasher()
        try await withDashboard(hasher: hasher) { server, browser in
            _ = try await browser.signUp(password: "my password is long")
            let asked = try await browser.post("/dashboard/settings/api-keys/production", ["current": "none"])
            #expect(asked.location?.hasPrefix("/dashboard/settings/api-keys?confirm=production") == true)
            let confirm = try await browser.get("/dashboard/settings/api-keys?confirm=production")
            #expect(confirm.html.contains(#"id="production-password""#))

            let wrong = try await browser.post(
                "/dashboard/settings/api-keys/production",
                ["current": "none", "confirm": "yes", "password": "not it at all"]
            )
            #expect(wrong.status == .badRequest)
            #expect(wrong.html.contains(#"id="production-password-error""#))
            #expect(revealedKey(in: wrong.html, environment: "production") == nil)
            let noPassword = try await browser.post("/dashboard/settings/api-keys/production", ["current": "none", "confirm": "yes"])
            #expect(noPassword.status == .badRequest)

            let right = try await browser.post(
                "/dashboard/settings/api-keys/production",
                ["current": "none", "confirm": "yes", "password": "my password is long"]
            )
            let key = try #require(revealedKey(in: right.html, environment: "production"))
            #expect(key.hasPrefix("kw_prod_"))
            #expect(try await browser.client.call(.get, "/whoami", key: key)["environment"] as? String == "production")
        }
    }

    @Test func theUsersPageSwitchesEnvironmentsSearchesAndPages() async throws {
        try await withDashboard { server, browser in
            _ = try await browser.signUp()
            let generated = try await browser.post("/dashboard/settings/api-keys/development", ["current": "none"])
            let key = try #require(revealedKey(in: generated.html, environment: "development"))
            let batch = (0..<30).map { #"{"username": "user\#(String(format: "%02d", $0))@acme.test"}"# }.joined(separator: ",")
            #expect(
                try await browser.client.call(
                    .post,
                    "/users/batch",
                    key: key,
                    json: "[\(batch), {\"username\": \"zed\", \"fullName\": \"Zed <b>Bold</b>\"}]"
                ).status == .ok
            )

            let first = try await browser.get("/dashboard/users?environment=development")
            #expect(first.html.contains("31 users in development."))
            #expect(first.html.contains("user00@acme.test"))
            #expect(!first.html.contains("user25@acme.test"), "25 to a page")
            #expect(first.html.contains(#"id="next-page""#))
            let nextLink = try #require(
                first.html.range(of: #"href=""#, range: first.html.range(of: #"<nav class="pages""#)!.upperBound..<first.html.endIndex)
            )
            let nextPath = String(first.html[nextLink.upperBound...].prefix { $0 != "\"" }).replacingOccurrences(of: "&amp;", with: "&")
            #expect(nextPath.contains("after=user24"))
            let second = try await browser.get(nextPath)
            #expect(second.html.contains("user25@acme.test"))
            #expect(second.html.contains("zed"))
            #expect(second.html.contains("Zed &lt;b&gt;Bold&lt;/b&gt;"), "names are escaped")

            let search = try await browser.get("/dashboard/users?environment=development&q=user1")
            #expect(search.html.contains("10 users of 31 in development start with"))
            // The search box is a GET form: a browser sends its spaces as `+`.
            #expect(try await browser.client.createUser("zed two", key: key).isEmpty == false)
            let spaced = try await browser.get("/dashboard/users?environment=development&q=zed+t")
            #expect(spaced.html.contains("1 user of 32 in development start with"), "\(spaced.html)")

            let production = try await browser.get("/dashboard/users?environment=production")
            #expect(production.html.contains("0 users in production."))
            #expect(!production.html.contains("user00@acme.test"))

            let member = try #require(try await server.store.memberCredentials(email: "owner@acme.test")).member
            let user = try #require(try await server.store.user("zed", in: .init(accountID: member.accountID, environment: .development)))
            let detail = try await browser.get("/dashboard/users/\(user.id.rawValue)?environment=development")
            #expect(detail.status == .ok)
            #expect(detail.html.contains(user.id.rawValue))
            #expect(try await browser.get("/dashboard/users/\(user.id.rawValue)?environment=production").status == .notFound)
            // The dashboard reads a path's user as the API does: by username too, in NFC, and
            // refusing what is not percent-encoded text.
            #expect(try await browser.get("/dashboard/users/zed?environment=development").html.contains(user.id.rawValue))
            #expect(try await browser.get("/dashboard/users/%ZZ?environment=development").status == .badRequest)
            #expect(try await browser.client.call(.get, "/users/%ZZ", key: key).status == .badRequest)
        }
    }

    @Test func anotherAccountsUsersAreNeverShown() async throws {
        try await withDashboard { server, browser in
            _ = try await browser.signUp()
            let fixtureUser = try await browser.client.createUser("globex-user", key: server.key(server.globex, .development))
            let list = try await browser.get("/dashboard/users?environment=development")
            #expect(!list.html.contains("globex-user"))
            #expect(try await browser.get("/dashboard/users/\(fixtureUser)?environment=development").status == .notFound)
        }
    }

    @Test func theDashboardAndTheAPIDoNotAcceptEachOthersCredentials() async throws {
        try await withDashboard { server, browser in
            _ = try await browser.signUp()
            let session = try #require(browser.cookies["keyway_session"])
            let api = try await browser.client.call(.get, "/users", headers: [.cookie: "keyway_session=\(session)"])
            #expect(api.status == .unauthorized)
            #expect(api.code == "missing_api_key")
            let dashboard = try await browser.client.execute(
                uri: "/dashboard/users",
                method: .get,
                headers: [.authorization: "Bearer \(server.key(server.acme, .development))"]
            ) { $0 }
            #expect(dashboard.status == .seeOther)
            #expect(dashboard.headers[.location] == "/dashboard/signin")
        }
    }

    @Test func theIPAddressesPageListsTheConfiguredAddresses() async throws {
        try await withDashboard { _, browser in
            _ = try await browser.signUp()
            let page = try await browser.get("/dashboard/settings/ip-addresses")
            #expect(page.html.contains("203.0.113.10\n2001:db8::1"))
            #expect(page.html.contains("allow-list"))
            #expect(page.html.contains(##"data-copy="#egress""##))
        }
    }

    @Test func staticFilesComeFromTheBinary() async throws {
        try await withDashboard { _, browser in
            let css = try await browser.get("/dashboard/static/keyway.css")
            #expect(css.status == .ok)
            #expect(css.headers[.contentType]?.hasPrefix("text/css") == true)
            #expect(try await browser.get("/dashboard/static/keyway.js").status == .ok)
            #expect(try await browser.get("/dashboard/static/missing.js").status == .notFound)
            let missing = try await browser.get("/dashboard/no/such/page")
            #expect(missing.status == .notFound)
            #expect(missing.html.contains("<title>Not found · Keyway</title>"))
        }
    }

    /// The session cookie as docs/architecture.md describes it: script cannot read it, other
    /// sites' requests do not carry it, and it lasts 12 hours.
    @Test func theSessionCookieIsHttpOnlyLaxAndLastsTwelveHours() async throws {
        try await withDashboard { _, browser in
            try await browser.get("/dashboard/signup")
            let response = try await browser.post(
                "/dashboard/signup",
                ["email": "owner@acme.test", "password": "correct horse battery", "company": "Acme"]
            )
            let session = try #require(response.headers[values: .setCookie].first { $0.hasPrefix("keyway_session=") })
            let attributes = Set(session.split(separator: ";").dropFirst().map { $0.trimmingCharacters(in: .whitespaces).lowercased() })
            #expect(attributes.contains("httponly"), "\(session)")
            #expect(attributes.contains("samesite=lax"), "\(session)")
            #expect(attributes.contains("max-age=43200"), "\(session)")
            #expect(!attributes.contains("secure"), "over http the cookie cannot be Secure")
        }
    }
}

func revealedKey(in html: String, environment: String) -> String? {
    guard let range = html.range(of: #"id="\#(environment)-key" class="secret" value=""#) else { return nil }
    return String(html[range.upperBound...].prefix { $0 != "\"" })
}

func hiddenField(_ name: String, in html: String) -> String? {
    guard let range = html.range(of: #"name="\#(name)" value=""#) else { return nil }
    return String(html[range.upperBound...].prefix { $0 != "\"" })
}
