import Foundation
import HTTPTypes
import Hummingbird
import HummingbirdTesting
import KeywayCore
import Testing

@testable import KeywayHTTP

/// TOTP codes, QR codes and recovery codes, then two-factor sign-in through the dashboard.
@Suite struct TwoFactorTests {
    // MARK: Codes

    /// RFC 6238, appendix B: the SHA-1 vectors (secret "12345678901234567890", 8 digits).
    @Test(arguments: [
        (59, "94287082"), (1_111_111_109, "07081804"), (1_111_111_111, "14050471"), (1_234_567_890, "89005924"),
        (2_000_000_000, "69279037"), (20_000_000_000, "65353130"),
    ])
    func codesMatchRFC6238sTestVectors(seconds: Int64, code: String) {
        let codes = TwoFactorCodes(secret: "12345678901234567890", digits: 8)
        #expect(codes.code(atStep: TwoFactorCodes.step(at: Date(timeIntervalSince1970: Double(seconds)))) == code)
    }

    @Test func aCodeIsAcceptedWithinOneStepOfDriftAndOnlyAfterTheLastUsedStep() {
        let codes = TwoFactorCodes.generate()
        let now = Date(timeIntervalSince1970: 1_800_000_000)
        let step = TwoFactorCodes.step(at: now)
        #expect(codes.matchingStep(codes.code(atStep: step), at: now, after: nil) == step)
        #expect(codes.matchingStep(codes.code(atStep: step - 1), at: now, after: nil) == step - 1, "a code typed as it changed")
        #expect(codes.matchingStep(codes.code(atStep: step + 1), at: now, after: nil) == step + 1, "a phone a little ahead")
        #expect(codes.matchingStep(codes.code(atStep: step - 2), at: now, after: nil) == nil, "a minute old")
        #expect(codes.matchingStep(codes.code(atStep: step), at: now, after: step) == nil, "used already")
        #expect(codes.matchingStep(codes.code(atStep: step - 1), at: now, after: step) == nil, "older than the last used")
        #expect(
            codes.matchingStep(" " + codes.code(atStep: step).prefix(3) + " " + codes.code(atStep: step).dropFirst(3), at: now, after: nil) == step
        )
        for junk in ["", "12345", "1234567", "abcdef", "١٢٣٤٥٦"] {
            #expect(codes.matchingStep(junk, at: now, after: nil) == nil, "\(junk)")
        }
    }

    @Test func theSecretIsOfferedAsAnOtpauthURIAndAsBase32() throws {
        let codes = TwoFactorCodes(secret: "12345678901234567890")
        let uri = codes.authenticatorURI(account: "owner@acme.test", issuer: "Keyway")
        #expect(uri.hasPrefix("otpauth://totp/Keyway:owner@acme.test?secret=GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ"))
        #expect(uri.contains("issuer=Keyway"))
        #expect(codes.manualEntry == "GEZD GNBV GY3T QOJQ GEZD GNBV GY3T QOJQ")
    }

    @Test func theQRCodeIsAnSVGOfModulesWithAQuietZone() throws {
        let svg = try #require(QRCodeSVG.render("otpauth://totp/Keyway:a@b.test?secret=GEZDGNBV&issuer=Keyway", label: "QR"))
        // Version 3 (29 modules) holds this at medium correction; 4 modules of quiet zone each side.
        let side = try #require(svg.firstMatch(of: /viewBox="0 0 (\d+) \d+"/)?.1).flatMap { Int($0) }
        #expect(side.map { ($0 - 8 - 17) % 4 == 0 && $0 >= 29 } == true, "\(String(describing: side))")
        #expect(svg.contains("M4,4h1v1h-1z"), "the top-left finder pattern's corner is dark")
        #expect(!svg.contains("M3,3h1"), "the quiet zone is light")
        #expect(!svg.contains("<script"))
    }

    @Test func recoveryCodesAreTenDistinctAndReadLeniently() {
        let codes = RecoveryCodes.generate()
        #expect(codes.count == 10)
        #expect(Set(codes).count == 10)
        for code in codes { #expect(code.wholeMatch(of: /[a-z2-9]{5}-[a-z2-9]{5}/) != nil, "\(code)") }
        let sealer = TwoFactorSecrets(masterKey: try! MasterKey(bytes: Array(repeating: UInt8(7), count: 32)))
        let member = MemberID(rawValue: "mem_a")
        #expect(sealer.recoveryDigest("ABCDE-FGHJK", for: member) == sealer.recoveryDigest(" abcde fghjk ", for: member))
        #expect(sealer.recoveryDigest("abcde-fghjk", for: member) != sealer.recoveryDigest("abcde-fghjk", for: MemberID(rawValue: "mem_b")))
        // Keyed: not the plain SHA-256 a copy of the database could be searched with.
        #expect(sealer.recoveryDigest("abcde-fghjk", for: member) != KeyDigest(hashing: "abcdefghjk".utf8))
        let other = TwoFactorSecrets(masterKey: try! MasterKey(bytes: Array(repeating: UInt8(8), count: 32)))
        #expect(sealer.recoveryDigest("abcde-fghjk", for: member) != other.recoveryDigest("abcde-fghjk", for: member))
        #expect(RecoveryCodes.looksLikeOne("12345-67890"), "an all-digit recovery code is still one")
        #expect(!RecoveryCodes.looksLikeOne("123456"))
    }

    // MARK: Through the dashboard

    static let password = "correct horse battery"

    /// Signs up, turns two-factor on from Settings, and returns the secret and recovery codes.
    func enroll(_ server: TestServer, _ browser: TestBrowser, email: String = "owner@acme.test") async throws -> (TwoFactorCodes, [String]) {
        _ = try await browser.signUp(email: email, password: Self.password)
        try await browser.get("/dashboard/settings/two-factor")
        let setup = try await browser.post("/dashboard/settings/two-factor/setup", [:])
        #expect(setup.html.contains("<svg"), "the QR code is drawn inline")
        let shown = try #require(setup.html.firstMatch(of: /id="totp-secret">([A-Z2-7 ]+)</)?.1)
        let member = try #require(try await server.store.memberCredentials(email: email)?.member)
        let sealed = try #require(try await server.store.pendingTwoFactorSecret(of: member.id))
        let codes = TwoFactorCodes(
            secret: try TwoFactorSecrets(masterKey: try MasterKey(bytes: Array(repeating: UInt8(7), count: 32))).unseal(sealed, for: member.id)
        )
        #expect(codes.manualEntry == String(shown), "the page shows the secret that is stored")
        let wrong = try await browser.post("/dashboard/settings/two-factor/confirm", ["code": "000000"])
        #expect(wrong.status == .badRequest)
        let confirmed = try await browser.post(
            "/dashboard/settings/two-factor/confirm",
            ["code": codes.code(atStep: TwoFactorCodes.step(at: server.clock.now))]
        )
        #expect(confirmed.status == .ok, "\(confirmed.html)")
        let recovery = confirmed.html.matches(of: /<li><code>([a-z2-9]{5}-[a-z2-9]{5})<\/code><\/li>/).map { String($0.1) }
        #expect(recovery.count == 10)
        return (codes, recovery)
    }

    /// Types the password on the sign-in page and opens the code page it leads to.
    @discardableResult
    func enterPassword(_ browser: TestBrowser) async throws -> TestBrowser.Page {
        try await browser.get("/dashboard/signin")
        let page = try await browser.post("/dashboard/signin", ["email": "owner@acme.test", "password": Self.password])
        try await browser.get("/dashboard/signin/code")
        return page
    }

    /// The code of the server's current step.
    func code(_ codes: TwoFactorCodes, _ server: TestServer) -> String { codes.code(atStep: TwoFactorCodes.step(at: server.clock.now)) }

    @Test func signingInAsksForTheCodeAfterThePasswordAndACodeWorksOnce() async throws {
        let server = try await TestServer.make(passwordHasher: CountingHasher())
        try await server.test { client in
            let browser = TestBrowser(client)
            let (codes, _) = try await enroll(server, browser)
            try await browser.post("/dashboard/signout", [:])
            // The code the confirmation used is spent; a later step's code signs in.
            server.clock.advance(by: 30)

            try await browser.get("/dashboard/signin")
            let password = try await browser.post("/dashboard/signin", ["email": "owner@acme.test", "password": Self.password])
            #expect(password.location == "/dashboard/signin/code")
            #expect(try await browser.get("/dashboard/settings/api-keys").location == "/dashboard/signin", "the password alone opens nothing")
            try await browser.get("/dashboard/signin/code")
            let wrong = try await browser.post("/dashboard/signin/code", ["code": "123456"])
            #expect(wrong.status == .unauthorized)
            let current = code(codes, server)
            let right = try await browser.post("/dashboard/signin/code", ["code": current])
            #expect(right.location == "/dashboard/settings/api-keys")
            #expect(try await browser.get("/dashboard/settings/api-keys").status == .ok)

            // Another browser with the password and the same code, in the same 30 seconds: refused.
            let thief = TestBrowser(client)
            try await enterPassword(thief)
            #expect(try await thief.post("/dashboard/signin/code", ["code": current]).status == .unauthorized, "no replay")

            let account = try #require(try await server.store.memberCredentials(email: "owner@acme.test")?.member.accountID)
            let entries = try await server.store.auditEntries(for: account, matching: AuditQuery(limit: 100)).map(\.event)
            #expect(entries.contains(.twoFactorEnabled))
            #expect(entries.filter { $0 == .signInFailed }.count == 2, "each wrong code is recorded")
        }
    }

    @Test func aRecoveryCodeSignsInOnce() async throws {
        let server = try await TestServer.make(passwordHasher: CountingHasher())
        try await server.test { client in
            let browser = TestBrowser(client)
            let (_, recovery) = try await enroll(server, browser)
            try await browser.post("/dashboard/signout", [:])
            for attempt in 0..<2 {
                let other = TestBrowser(client)
                try await enterPassword(other)
                let page = try await other.post("/dashboard/signin/code", ["code": recovery[0].uppercased()])
                #expect(page.status == (attempt == 0 ? .seeOther : .unauthorized), "attempt \(attempt)")
            }
            let member = try #require(try await server.store.memberCredentials(email: "owner@acme.test")?.member)
            #expect(try await server.store.twoFactor(of: member.id)?.recoveryCodesLeft == 9)
        }
    }

    @Test func wrongCodesAreThrottledLikePasswords() async throws {
        let server = try await TestServer.make(passwordHasher: CountingHasher())
        try await server.test { client in
            let browser = TestBrowser(client)
            let (codes, _) = try await enroll(server, browser)
            try await browser.post("/dashboard/signout", [:])
            server.clock.advance(by: 30)
            try await enterPassword(browser)
            var statuses: [HTTPResponse.Status] = []
            for _ in 0..<12 { statuses.append(try await browser.post("/dashboard/signin/code", ["code": "000000"]).status) }
            #expect(statuses.contains(.tooManyRequests), "\(statuses)")
            // Even the right code waits while the member is locked out.
            #expect(try await browser.post("/dashboard/signin/code", ["code": code(codes, server)]).status == .tooManyRequests)
        }
    }

    /// The throttle's windows let ten tries through every fifteen minutes; the stored count of
    /// wrong codes does not forget: after twenty in a row only a recovery code signs in.
    @Test func aPatientGuesserIsStoppedAfterTwentyWrongCodes() async throws {
        let server = try await TestServer.make(passwordHasher: CountingHasher())
        try await server.test { client in
            let browser = TestBrowser(client)
            let (codes, recovery) = try await enroll(server, browser)
            try await browser.post("/dashboard/signout", [:])
            try await enterPassword(browser)
            for batch in 0..<5 {
                for attempt in 0..<4 {
                    let page = try await browser.post("/dashboard/signin/code", ["code": "000000"])
                    #expect(page.status == .unauthorized, "batch \(batch), attempt \(attempt): \(page.status)")
                }
                server.clock.advance(by: 16 * 60)  // past every throttle's window
            }
            let right = try await browser.post("/dashboard/signin/code", ["code": code(codes, server)])
            #expect(right.status == .tooManyRequests)
            #expect(right.html.contains("recovery codes"))
            #expect(try await browser.post("/dashboard/signin/code", ["code": recovery[4]]).location == "/dashboard/settings/api-keys")

            // The recovery code cleared the count: the app's codes work again.
            try await browser.post("/dashboard/signout", [:])
            server.clock.advance(by: 30)
            try await enterPassword(browser)
            #expect(try await browser.post("/dashboard/signin/code", ["code": code(codes, server)]).location == "/dashboard/settings/api-keys")
        }
    }

    @Test func theProductionKeyAsksForTheCodeInsteadOfThePassword() async throws {
        let server = try await TestServer.make(passwordHasher: CountingHasher())
        try await server.test { client in
            let browser = TestBrowser(client)
            let (codes, _) = try await enroll(server, browser)
            server.clock.advance(by: 30)
            let confirm = try await browser.get("/dashboard/settings/api-keys?confirm=production")
            #expect(confirm.html.contains(#"id="production-code""#))
            #expect(!confirm.html.contains(#"id="production-password""#))
            let withPassword = try await browser.post(
                "/dashboard/settings/api-keys/production",
                ["current": "none", "confirm": "yes", "password": Self.password]
            )
            #expect(withPassword.status == .badRequest, "the password is not enough")
            let withCode = try await browser.post(
                "/dashboard/settings/api-keys/production",
                ["current": "none", "confirm": "yes", "code": code(codes, server)]
            )
            #expect(revealedKey(in: withCode.html, environment: "production") != nil, "\(withCode.status)")
        }
    }

    @Test func anAccountThatRequiresTwoFactorSendsMembersToSetItUp() async throws {
        let server = try await TestServer.make(passwordHasher: CountingHasher())
        try await server.test { client in
            let browser = TestBrowser(client)
            _ = try await browser.signUp(email: "owner@acme.test", password: Self.password)
            try await browser.get("/dashboard/settings/members")
            _ = try await browser.post("/dashboard/settings/members/policy", ["requireTwoFactor": "on"])
            let keys = try await browser.get("/dashboard/settings/api-keys")
            #expect(keys.location == "/dashboard/settings/two-factor?required=1")
            let users = try await browser.post("/dashboard/settings/rate-limits/development", ["requestsPerSecond": "3"])
            #expect(users.location == "/dashboard/settings/two-factor?required=1", "forms too")
            let setup = try await browser.get("/dashboard/settings/two-factor?required=1")
            #expect(setup.status == .ok)
            #expect(setup.html.contains("requires two-factor sign-in"))
        }
    }

    @Test func aLostPhoneIsReplacedWithARecoveryCode() async throws {
        let server = try await TestServer.make(passwordHasher: CountingHasher())
        try await server.test { client in
            let browser = TestBrowser(client)
            let (old, recovery) = try await enroll(server, browser)
            let member = try #require(try await server.store.memberCredentials(email: "owner@acme.test")?.member)
            try await browser.get("/dashboard/settings/two-factor")
            #expect(try await browser.post("/dashboard/settings/two-factor/setup", [:]).status == .badRequest, "not without a factor")
            let setup = try await browser.post("/dashboard/settings/two-factor/setup", ["code": recovery[1]])
            #expect(setup.html.contains(#"id="totp-secret""#), "\(setup.status)")
            let sealed = try #require(try await server.store.pendingTwoFactorSecret(of: member.id))
            let new = TwoFactorCodes(
                secret: try TwoFactorSecrets(masterKey: try MasterKey(bytes: Array(repeating: UInt8(7), count: 32))).unseal(sealed, for: member.id)
            )
            server.clock.advance(by: 30)
            let confirmed = try await browser.post("/dashboard/settings/two-factor/confirm", ["code": code(new, server)])
            #expect(confirmed.html.contains(#"id="recovery-codes""#), "new recovery codes too")

            // The old phone's codes no longer sign in; the new one's do.
            try await browser.post("/dashboard/signout", [:])
            server.clock.advance(by: 30)
            try await enterPassword(browser)
            #expect(try await browser.post("/dashboard/signin/code", ["code": code(old, server)]).status == .unauthorized)
            #expect(try await browser.post("/dashboard/signin/code", ["code": recovery[2]]).status == .unauthorized, "old recovery codes too")
            #expect(try await browser.post("/dashboard/signin/code", ["code": code(new, server)]).location == "/dashboard/settings/api-keys")
        }
    }

    @Test func turningItOffNeedsACurrentCode() async throws {
        let server = try await TestServer.make(passwordHasher: CountingHasher())
        try await server.test { client in
            let browser = TestBrowser(client)
            let (codes, _) = try await enroll(server, browser)
            server.clock.advance(by: 30)
            try await browser.get("/dashboard/settings/two-factor")
            #expect(try await browser.post("/dashboard/settings/two-factor/disable", ["code": "000000"]).status == .badRequest)
            let off = try await browser.post("/dashboard/settings/two-factor/disable", ["code": code(codes, server)])
            #expect(off.location == "/dashboard/settings/two-factor")
            #expect(try await browser.get("/dashboard/settings/two-factor").html.contains("is <strong>off</strong>"))
        }
    }
}
