import Foundation
import HTTPTypes
import Hummingbird
import HummingbirdTesting
import KeywayCore
import KeywayHTTP
import Testing

/// Passwords bcrypt would read only in part (a NUL byte, more than 72 bytes) are refused everywhere.
@Suite struct PasswordRulesTests {
    @Test func aPasswordWithANULByteNeverSignsInAsTheBytesBeforeIt() async throws {
        // Real bcrypt: the flaw is bcrypt's own (it stops reading at NUL).
        let bcrypt = BcryptPasswordHasher()
        let server = try await TestServer.make(passwordHasher: bcrypt)
        // A member whose password is `ab`, as an older Keyway or an admin could have set.
        _ = try await server.store.createAccount(
            name: "Old",
            ownerEmail: "old@acme.test",
            passwordHash: try await bcrypt.hash("ab"),
            at: Date(),
            audit: .system
        )
        try await server.test { client in
            let form = try await SignInForm(TestBrowser(client))
            let withNUL = try await form.submit(email: "old@acme.test", password: "ab\0cdefghijkl")
            #expect(withNUL.status == .badRequest)
            #expect(try await form.submit(email: "old@acme.test", password: "ab").status == .seeOther, "the real password still works")

            let browser = TestBrowser(client)
            try await browser.get("/dashboard/signup")
            let signUp = try await browser.post("/dashboard/signup", ["email": "new@acme.test", "password": "ab\0cdefghijkl", "company": "New"])
            #expect(signUp.status == .badRequest)
            #expect(try await server.store.memberCredentials(email: "new@acme.test") == nil)
        }
    }

    @Test func passwordsOver72BytesAreRefusedEverywhereWithoutAHash() async throws {
        let hasher = CountingHasher()
        let server = try await TestServer.make(passwordHasher: hasher)
        let long = String(repeating: "x", count: 72) + "y"
        try await server.test { client in
            let browser = TestBrowser(client)
            _ = try await browser.signUp(email: "owner@acme.test", password: String(long.prefix(72)))
            try await browser.get("/dashboard/settings/account")
            let change = try await browser.post("/dashboard/settings/account/password", ["current": long, "new": "a brand new password"])
            #expect(change.status == .badRequest)
            let tooLongNew = try await browser.post(
                "/dashboard/settings/account/password",
                ["current": String(long.prefix(72)), "new": long]
            )
            #expect(tooLongNew.status == .badRequest)
            #expect(hasher.verifications == 0, "neither was checked against the hash")

            let form = try await SignInForm(TestBrowser(client))
            #expect(try await form.submit(email: "owner@acme.test", password: long).status == .badRequest)
            #expect(hasher.verifications == 0)
        }
    }
}
