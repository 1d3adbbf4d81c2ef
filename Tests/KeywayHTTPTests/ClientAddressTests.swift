import HTTPTypes
import KeywayCore
import Testing

@testable import KeywayHTTP

/// Which address a request is throttled by (`KEYWAY_TRUSTED_PROXIES`, `KEYWAY_CLIENT_ADDRESS_HEADER`).
@Suite struct ClientAddressTests {
    func proxies(_ list: String, header: String? = nil) throws -> TrustedProxies {
        var environment = ["KEYWAY_TRUSTED_PROXIES": list]
        if let header { environment["KEYWAY_CLIENT_ADDRESS_HEADER"] = header }
        return try ServerConfiguration(environment: environment).trustedProxies
    }

    func fields(_ pairs: [(String, String)]) -> HTTPFields {
        var fields = HTTPFields()
        for (name, value) in pairs { fields.append(HTTPField(name: HTTPField.Name(name)!, value: value)) }
        return fields
    }

    @Test func theRightmostUntrustedHopIsTheClient() throws {
        let trusted = try proxies("127.0.0.1, 10.0.0.0/8")
        let key = { (peer: String, header: String) in trusted.clientKey(peer: peer, headers: self.fields([("X-Forwarded-For", header)])) }
        #expect(key("127.0.0.1", "198.51.100.7") == "198.51.100.7")
        #expect(key("127.0.0.1", "203.0.113.1, 198.51.100.7") == "198.51.100.7", "the client's own entries are to the left")
        #expect(key("127.0.0.1", "198.51.100.7, 10.2.3.4, 10.9.9.9") == "198.51.100.7", "trusted hops are skipped")
        #expect(key("127.0.0.1", "10.2.3.4") == "10.2.3.4", "all hops trusted: the leftmost")
        #expect(key("127.0.0.1", "nonsense, 198.51.100.7") == "198.51.100.7")
        #expect(key("127.0.0.1", "198.51.100.7, nonsense") == "127.0.0.1", "an unreadable nearest hop leaves the proxy")
        #expect(key("127.0.0.1", "198.51.100.7:4711") == "198.51.100.7")
        #expect(trusted.clientKey(peer: "127.0.0.1", headers: [:]) == "127.0.0.1")
        let repeated = fields([("X-Forwarded-For", "198.51.100.1"), ("X-Forwarded-For", "198.51.100.2")])
        #expect(trusted.clientKey(peer: "127.0.0.1", headers: repeated) == "198.51.100.2", "repeated lines are one list")
    }

    @Test func anUntrustedPeerIsTheClientWhateverItsHeadersSay() throws {
        let trusted = try proxies("10.0.0.0/8")
        let headers = fields([("X-Forwarded-For", "198.51.100.7"), ("Forwarded", "for=198.51.100.8")])
        #expect(trusted.clientKey(peer: "203.0.113.5", headers: headers) == "203.0.113.5")
        #expect(TrustedProxies.direct.clientKey(peer: "127.0.0.1", headers: headers) == "127.0.0.1")
        #expect(trusted.clientKey(peer: "unknown", headers: headers) == "unknown")
    }

    @Test func forwardedIsReadOnlyWhenChosenAndThenAlone() throws {
        let trusted = try proxies("127.0.0.1", header: "Forwarded")
        let headers = fields([
            ("X-Forwarded-For", "198.51.100.9"),
            ("Forwarded", #"for=192.0.2.60;proto=http;by=203.0.113.43, For="[2001:db8:cafe::17]:4711""#),
        ])
        #expect(trusted.clientKey(peer: "127.0.0.1", headers: headers) == "2001:db8:cafe::/64")
        #expect(trusted.clientKey(peer: "127.0.0.1", headers: fields([("Forwarded", "for=unknown")])) == "127.0.0.1")
        let xff = try proxies("127.0.0.1")
        #expect(xff.clientKey(peer: "127.0.0.1", headers: fields([("Forwarded", "for=192.0.2.60")])) == "127.0.0.1")
    }

    @Test func ipv6ClientsAreKeyedByTheirSlash64() throws {
        let direct = TrustedProxies.direct
        #expect(direct.clientKey(peer: "2001:db8:1:2:3:4:5:6", headers: [:]) == "2001:db8:1:2::/64")
        #expect(direct.clientKey(peer: "2001:db8:1:2:ffff::1", headers: [:]) == "2001:db8:1:2::/64")
        #expect(direct.clientKey(peer: "::ffff:192.0.2.1", headers: [:]) == "192.0.2.1", "a mapped IPv4 peer is IPv4")
        let trusted = try proxies("::1, 2001:db8:ffff::/48")
        #expect(trusted.clientKey(peer: "::1", headers: fields([("X-Forwarded-For", "2001:db8:5:6::9, 2001:db8:ffff:1::1")])) == "2001:db8:5:6::/64")
    }

    @Test func settingsAreCheckedWhenRead() throws {
        #expect(try ServerConfiguration(environment: [:]).trustedProxies == .direct)
        #expect(try ServerConfiguration(environment: [:]).throttleEntries == 100_000)
        #expect(try ServerConfiguration(environment: ["KEYWAY_THROTTLE_ENTRIES": "5000"]).throttleEntries == 5000)
        #expect(try proxies(" 10.0.0.0/8 , ::1,").header == .xForwardedFor)
        #expect(try proxies("10.0.0.1", header: "forwarded").header == .forwarded)
        for (variable, value) in [
            ("KEYWAY_TRUSTED_PROXIES", "10.0.0.0/33"), ("KEYWAY_TRUSTED_PROXIES", "proxy.internal"),
            ("KEYWAY_CLIENT_ADDRESS_HEADER", "X-Real-IP"), ("KEYWAY_THROTTLE_ENTRIES", "10"),
        ] {
            #expect(throws: ConfigurationError.self, "\(variable)=\(value)") { try ServerConfiguration(environment: [variable: value]) }
            do {
                _ = try ServerConfiguration(environment: [variable: value])
            } catch {
                #expect(error.variable == variable)
            }
        }
    }

    @Test func rangesMatchByPrefix() throws {
        let range = try #require(IPRange("192.168.16.0/20"))
        #expect(range.contains(try #require(IPAddress("192.168.31.255"))))
        #expect(!range.contains(try #require(IPAddress("192.168.32.0"))))
        #expect(!range.contains(try #require(IPAddress("2001:db8::1"))))
        #expect(try #require(IPRange("::ffff:10.0.0.0/104")).contains(try #require(IPAddress("10.1.2.3"))))
        #expect(IPRange("::ffff:10.0.0.0/64") == nil)
        #expect(try #require(IPRange("0.0.0.0/0")).contains(try #require(IPAddress("203.0.113.1"))))
    }
}
