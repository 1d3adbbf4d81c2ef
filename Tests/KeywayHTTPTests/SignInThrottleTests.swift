import Foundation
import HTTPTypes
import Hummingbird
import HummingbirdTesting
import KeywayCore
import KeywayHTTP
import Synchronization
import Testing

/// Counts password checks, each taking a few milliseconds as bcrypt does on its
/// thread pool, so concurrent sign-ins really overlap.
final class SlowCountingHasher: PasswordHasher {
    private let counts = Mutex(0)
    var verifications: Int { counts.withLock { $0 } }

    func hash(_ password: String) async throws -> String { "test-hash:" + password }

    func verify(_ password: String, hash: String) async throws -> Bool {
        counts.withLock { $0 += 1 }
        try await Task.sleep(for: .milliseconds(5))
        return hash == "test-hash:" + password
    }
}

/// Sign-in throttling: atomic reservations, per-session password re-entry, bounded keys, proxies.
@Suite struct SignInThrottleTests {
    static let freeFailures = AttemptThrottle.Policy.perAccount.freeFailures

    @Test func concurrentWrongSignInsComputeAtMostTheAllowedPasswordHashes() async throws {
        let hasher = SlowCountingHasher()
        let server = try await TestServer.make(passwordHasher: hasher)
        try await server.test { client in
            let browser = TestBrowser(client)
            _ = try await browser.signUp(email: "victim@acme.test", password: "the real password")
            try await browser.post("/dashboard/signout", [:])
            let form = try await SignInForm(browser)
            let statuses = try await withThrowingTaskGroup(of: HTTPResponse.Status.self) { group in
                for attempt in 0..<200 {
                    group.addTask { try await form.submit(email: "victim@acme.test", password: "guess \(attempt)").status }
                }
                return try await group.reduce(into: []) { $0.append($1) }
            }
            #expect(hasher.verifications <= Self.freeFailures, "200 concurrent guesses computed \(hasher.verifications) password hashes")
            #expect(statuses.filter { $0 == .unauthorized }.count == Self.freeFailures)
            #expect(statuses.filter { $0 == .tooManyRequests }.count == 200 - Self.freeFailures)
        }
    }

    @Test func aLockedEmailDoesNotStopTheSignedInOwnerFromRegeneratingTheProductionKey() async throws {
        let server = try await TestServer.make()
        try await server.test { client in
            let owner = TestBrowser(client)
            _ = try await owner.signUp(email: "owner@acme.test", password: "the owner's password")
            // Someone who knows the email fails until it is locked.
            let attacker = try await SignInForm(TestBrowser(client))
            var last = ""
            for attempt in 0..<12 {
                last = try await attacker.submit(email: "owner@acme.test", password: "guess \(attempt)").html
                server.clock.advance(by: 20)
            }
            #expect(last.contains("the account is locked for a while"))

            try await owner.get("/dashboard/settings/api-keys?confirm=production")
            let generated = try await owner.post(
                "/dashboard/settings/api-keys/production",
                ["current": "none", "confirm": "yes", "password": "the owner's password"]
            )
            let key = try #require(revealedKey(in: generated.html, environment: "production"), "the owner was refused: \(generated.html)")
            #expect(try await client.call(.get, "/whoami", key: key).status == .ok)

            try await owner.get("/dashboard/settings/account")
            let changed = try await owner.post(
                "/dashboard/settings/account/password",
                ["current": "the owner's password", "new": "a brand new password"]
            )
            #expect(changed.location == "/dashboard/signin?notice=password-changed", "the owner can change the password too")
        }
    }

    @Test func reenteredPasswordsAreThrottledPerSession() async throws {
        let hasher = CountingHasher()
        let server = try await TestServer.make(passwordHasher: hasher)
        try await server.test { client in
            let first = TestBrowser(client)
            _ = try await first.signUp(email: "owner@acme.test", password: "the owner's password")
            let second = TestBrowser(client)
            try await second.get("/dashboard/signin")
            #expect(try await second.post("/dashboard/signin", ["email": "owner@acme.test", "password": "the owner's password"]).status == .seeOther)

            try await first.get("/dashboard/settings/api-keys?confirm=production")
            for attempt in 0..<Self.freeFailures {
                let wrong = try await first.post(
                    "/dashboard/settings/api-keys/production",
                    ["current": "none", "confirm": "yes", "password": "wrong \(attempt)"]
                )
                #expect(wrong.html.contains("That password is wrong."))
            }
            let verifications = hasher.verifications
            let throttled = try await first.post(
                "/dashboard/settings/api-keys/production",
                ["current": "none", "confirm": "yes", "password": "the owner's password"]
            )
            #expect(throttled.html.contains("Too many wrong passwords. Try again in"))
            #expect(hasher.verifications == verifications, "a throttled re-entry computes no hash")

            // Another session of the same member is not affected.
            try await second.get("/dashboard/settings/api-keys?confirm=production")
            let other = try await second.post(
                "/dashboard/settings/api-keys/production",
                ["current": "none", "confirm": "yes", "password": "the owner's password"]
            )
            #expect(revealedKey(in: other.html, environment: "production") != nil)
        }
    }

    @Test func emailsLongerThan254BytesAreRefusedBeforeAnyThrottling() async throws {
        let hasher = CountingHasher()
        let server = try await TestServer.make(passwordHasher: hasher)
        try await server.test { client in
            let form = try await SignInForm(TestBrowser(client))
            // 255 bytes in 131 characters: the limit counts bytes.
            let long = String(repeating: "é", count: 124) + "@a.test"
            #expect(long.utf8.count == 255)
            for attempt in 0..<60 {
                let page = try await form.submit(email: "\(attempt)" + long, password: "whatever it is")
                #expect(page.status == .badRequest)
            }
            #expect(hasher.verifications == 0)
            // Had they been counted against this client, it would be locked out by now (40).
            #expect(try await form.submit(email: "someone@acme.test", password: "whatever it is").status == .unauthorized)
        }
    }

    @Test func behindATrustedProxyEachForwardedClientIsThrottledOnItsOwn() async throws {
        var configuration = TestServer.defaultConfiguration
        configuration.trustedProxies = try ServerConfiguration(environment: ["KEYWAY_TRUSTED_PROXIES": "127.0.0.1, 10.0.0.0/8"]).trustedProxies
        let server = try await TestServer.make(configuration: configuration)
        let free = AttemptThrottle.Policy.perClient.freeFailures
        try await server.test(.live) { client in
            let form = try await SignInForm(TestBrowser(client))
            func attempt(_ index: Int, from forwarded: String) async throws -> HTTPResponse.Status {
                try await form.submit(email: "user\(index)@acme.test", password: "wrong password", headers: [xForwardedFor: forwarded]).status
            }
            for index in 0..<free { #expect(try await attempt(index, from: "198.51.100.1") == .unauthorized) }
            #expect(try await attempt(100, from: "198.51.100.1") == .tooManyRequests)
            // What the client wrote to the left of the proxy's hop proves nothing.
            #expect(try await attempt(101, from: "203.0.113.9, 198.51.100.1") == .tooManyRequests)
            #expect(try await attempt(102, from: "198.51.100.1, 10.1.2.3") == .tooManyRequests, "trusted hops are skipped")
            #expect(try await attempt(103, from: "198.51.100.2") == .unauthorized, "another client is not affected")

            // IPv6 clients are one client per /64.
            for index in 0..<free { #expect(try await attempt(200 + index, from: "2001:db8:1:2::\(index + 1)") == .unauthorized) }
            #expect(try await attempt(300, from: "2001:db8:1:2:ffff:ffff:ffff:fff0") == .tooManyRequests)
            #expect(try await attempt(301, from: "2001:db8:1:3::1") == .unauthorized)
        }
    }

    /// A client already refused must not reach the per-email throttle: were each of its refused
    /// attempts to add an invented email there first, it could push a locked email out of the
    /// bounded table for free (no password hash) and unlock it for its other addresses.
    @Test func aRefusedClientCannotFlushALockedEmailOutOfTheThrottle() async throws {
        var configuration = TestServer.defaultConfiguration
        configuration.trustedProxies = try ServerConfiguration(environment: ["KEYWAY_TRUSTED_PROXIES": "127.0.0.1"]).trustedProxies
        configuration.throttleEntries = 100
        let server = try await TestServer.make(configuration: configuration)
        try await server.test(.live) { client in
            let owner = TestBrowser(client)
            _ = try await owner.signUp(email: "victim@acme.test", password: "the real password")
            let form = try await SignInForm(TestBrowser(client))
            func attempt(_ email: String, _ password: String, from address: String) async throws -> TestBrowser.Page {
                try await form.submit(email: email, password: password, headers: [xForwardedFor: address])
            }
            var last = ""
            for index in 0..<12 {
                last = try await attempt("victim@acme.test", "guess \(index)", from: "198.51.100.\(index + 1)").html
                server.clock.advance(by: 20)
            }
            #expect(last.contains("the account is locked for a while"))

            // One client uses up its free failures, then floods invented emails, each refused.
            for index in 0..<AttemptThrottle.Policy.perClient.freeFailures {
                #expect(try await attempt("free\(index)@flood.test", "wrong password", from: "203.0.113.7").status == .unauthorized)
            }
            for index in 0..<300 {
                #expect(try await attempt("flood\(index)@flood.test", "wrong password", from: "203.0.113.7").status == .tooManyRequests)
            }

            let owners = try await attempt("victim@acme.test", "the real password", from: "192.0.2.44")
            #expect(owners.status == .tooManyRequests, "the locked email was forgotten: \(owners.status)")
        }
    }

    @Test func forwardingHeadersFromAnUntrustedPeerAreIgnored() async throws {
        let server = try await TestServer.make()
        let free = AttemptThrottle.Policy.perClient.freeFailures
        try await server.test(.live) { client in
            let form = try await SignInForm(TestBrowser(client))
            for index in 0..<free {
                let status = try await form.submit(
                    email: "user\(index)@acme.test",
                    password: "wrong password",
                    headers: [xForwardedFor: "198.51.100.\(index)", forwarded: "for=198.51.100.\(index)"]
                ).status
                #expect(status == .unauthorized)
            }
            let next = try await form.submit(email: "next@acme.test", password: "wrong password", headers: [xForwardedFor: "198.51.100.99"])
            #expect(next.status == .tooManyRequests, "every request came from 127.0.0.1, whatever its headers say")
        }
    }
}

let xForwardedFor = HTTPField.Name("X-Forwarded-For")!
let forwarded = HTTPField.Name("Forwarded")!

/// The sign-in form of one anonymous browser, submitted as often as a test likes (concurrently too).
struct SignInForm: Sendable {
    let client: any TestClientProtocol
    let cookie: String
    let csrf: String

    init(_ browser: TestBrowser) async throws {
        let page = try await browser.get("/dashboard/signin")
        self.client = browser.client
        self.csrf = try #require(browser.csrfToken(in: page.html))
        self.cookie = browser.cookies.map { "\($0.key)=\($0.value)" }.joined(separator: "; ")
    }

    func submit(email: String, password: String, headers extra: HTTPFields = [:]) async throws -> TestBrowser.Page {
        var headers = extra
        headers[.cookie] = cookie
        headers[.contentType] = "application/x-www-form-urlencoded"
        let fields = ["email": email, "password": password, "csrf": csrf]
        let body = fields.map { "\($0.key)=\($0.value.addingPercentEncoding(withAllowedCharacters: .alphanumerics)!)" }.joined(separator: "&")
        return try await client.execute(uri: "/dashboard/signin", method: .post, headers: headers, body: ByteBuffer(string: body)) { response in
            TestBrowser.Page(status: response.status, headers: response.headers, html: String(buffer: response.body))
        }
    }
}
