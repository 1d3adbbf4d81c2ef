import KeywayCore
import Testing

@Suite struct BrowserOriginTests {
    @Test(arguments: [
        ("https://app.example.com", "https://app.example.com"),
        ("HTTPS://App.Example.COM", "https://app.example.com"),
        ("https://app.example.com:443", "https://app.example.com"),
        ("http://localhost:80/", "http://localhost"),
        ("http://localhost:3000", "http://localhost:3000"),
        ("https://app.example.com:80", "https://app.example.com:80"),
        ("http://[::1]:8080", "http://[::1]:8080"),
        ("http://[0:0:0:0:0:0:0:1]", "http://[::1]"),
        ("https://[2001:DB8:0:0:1:0:0:1]:443", "https://[2001:db8::1:0:0:1]"),
    ])
    func originsAreStoredAsBrowsersSendThem(raw: String, expected: String) throws {
        #expect(try BrowserOrigin(raw).serialized == expected)
    }

    @Test(arguments: [
        "https://user:secret@app.example.com", "https://user@app.example.com", "app.example.com", "ftp://app.example.com",
        "https://app.example.com/path", "https://app.example.com?x=1", "https://app.example.com#top", "https://", "null",
        "https://app.example.com\u{0}", "https://bücher.example", "http://[::g]",
    ])
    func whatNoOriginHoldsIsRefused(raw: String) {
        #expect(throws: KeywayError.self) { try BrowserOrigin(raw) }
    }
}

@Suite struct BrowserTokenTests {
    @Test func secretsCompareEqualOnlyWhenEqual() {
        #expect(BrowserToken.constantTimeEquals("a-secret-token", "a-secret-token"))
        #expect(!BrowserToken.constantTimeEquals("a-secret-token", "a-secret-tokem"))
        #expect(!BrowserToken.constantTimeEquals("a-secret-token", "a-secret-token-longer"))
        #expect(!BrowserToken.constantTimeEquals("", "x"))
    }
}
