import Foundation
import HTTPTypes
import Hummingbird
import HummingbirdTesting
import KeywayCore
import KeywayHTTP
import Testing

/// The dashboard's cookies and the origins its forms accept.
@Suite struct DashboardHardeningTests {
    @Test func overHTTPSTheCookiesAreHostPrefixedSecureAndForTheWholeSite() async throws {
        var configuration = TestServer.defaultConfiguration
        configuration.publicURL = "https://keyway.example.com"
        let server = try await TestServer.make(configuration: configuration)
        try await server.test { client in
            let browser = TestBrowser(client)
            let signInPage = try await browser.get("/dashboard/signin")
            let csrfCookie = try #require(signInPage.headers[values: .setCookie].first)
            #expect(csrfCookie.hasPrefix("__Host-keyway_csrf="))

            try await browser.get("/dashboard/signup")
            let signedUp = try await browser.post(
                "/dashboard/signup",
                ["email": "owner@acme.test", "password": "correct horse battery", "company": "Acme"]
            )
            let sessionCookie = try #require(signedUp.headers[values: .setCookie].first { $0.hasPrefix("__Host-keyway_session=") })
            for cookie in [csrfCookie, sessionCookie] {
                let attributes = cookie.split(separator: ";").map { $0.trimmingCharacters(in: .whitespaces).lowercased() }
                #expect(attributes.contains("secure"), "\(cookie)")
                #expect(attributes.contains("path=/"), "\(cookie)")
                #expect(!attributes.contains { $0.hasPrefix("domain=") }, "\(cookie)")
            }
            #expect(try await browser.get("/dashboard/users").status == .ok, "the prefixed cookie is the one read")
            let unprefixed = try await client.execute(
                uri: "/dashboard/users",
                method: .get,
                headers: [.cookie: "keyway_session=\(browser.cookies["__Host-keyway_session"] ?? "")"]
            ) { $0.status }
            #expect(unprefixed == .seeOther, "a cookie without the prefix, which any subdomain could set, is not a session")

            let signOut = try await browser.post("/dashboard/signout", [:])
            let cleared = try #require(signOut.headers[values: .setCookie].first)
            let attributes = cleared.split(separator: ";").map { $0.trimmingCharacters(in: .whitespaces) }
            #expect(attributes.first == "__Host-keyway_session=", "\(cleared)")
            #expect(attributes.contains("Path=/"), "\(cleared)")
        }
    }

    @Test func overHTTPTheCookiesKeepTheirPlainNames() async throws {
        let server = try await TestServer.make()
        try await server.test { client in
            let page = try await TestBrowser(client).get("/dashboard/signin")
            let cookie = try #require(page.headers[values: .setCookie].first)
            #expect(cookie.hasPrefix("keyway_csrf="))
            #expect(!cookie.contains("Secure"))
        }
    }

    @Test func everyDashboardPostWithOriginNullIsRefused() async throws {
        let server = try await TestServer.make()
        try await server.test { client in
            let browser = TestBrowser(client)
            _ = try await browser.signUp()
            let token = try #require(browser.csrfToken(in: try await browser.get("/dashboard/settings/api-keys").html))
            let cookies = browser.cookies.map { "\($0.key)=\($0.value)" }.joined(separator: "; ")
            let forms: [(String, String)] = [
                ("/dashboard/settings/api-keys/development", "current=none"),
                ("/dashboard/settings/account/password", "current=x&new=yyyyyyyyyyyy"),
                ("/dashboard/signout", ""),
                ("/dashboard/signin", "email=owner%40acme.test&password=correct+horse+battery"),
                ("/dashboard/signup", "email=b%40b.test&password=correct+horse+battery&company=B"),
            ]
            for (path, fields) in forms {
                let status = try await client.execute(
                    uri: path,
                    method: .post,
                    headers: [.cookie: cookies, .contentType: "application/x-www-form-urlencoded", .origin: "null"],
                    body: ByteBuffer(string: "csrf=\(token)&\(fields)")
                ) { $0.status }
                #expect(status == .forbidden, "\(path)")
            }
            let member = try #require(try await server.store.memberCredentials(email: "owner@acme.test")).member
            #expect(try await server.store.secretKeys(for: member.accountID).isEmpty, "nothing was generated")
            #expect(try await browser.get("/dashboard/users").status == .ok, "the session was not ended")
            #expect(try await server.store.memberCredentials(email: "b@b.test") == nil)
        }
    }
}
