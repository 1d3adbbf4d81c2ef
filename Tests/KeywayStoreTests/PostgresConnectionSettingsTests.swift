import Foundation
import KeywayCore
import NIOSSL
import Testing

@testable import KeywayPostgres

/// `KEYWAY_DATABASE_URL`'s `sslmode`, `sslrootcert` and `KEYWAY_DATABASE_CA_FILE`, read as libpq reads them.
@Suite struct PostgresConnectionSettingsTests {
    static let base = "postgres://keyway:hunter2@db.internal:6543/keyway"

    @Test func readsAddressCredentialsAndDatabase() throws {
        let settings = try PostgresConnectionSettings(url: "postgresql://k%40y:p%2Fw@db.internal:6543/key%20way")
        #expect(settings.host == "db.internal")
        #expect(settings.port == 6543)
        #expect(settings.username == "k@y")
        #expect(settings.password == "p/w")
        #expect(settings.database == "key way")
    }

    @Test func withoutSSLModeTLSIsPreferredAsInLibpq() throws {
        let settings = try PostgresConnectionSettings(url: Self.base)
        #expect(settings.sslMode == .prefer)
        #expect(settings.tlsConfiguration?.certificateVerification == CertificateVerification.none)
    }

    @Test(arguments: [
        ("disable", PostgresConnectionSettings.SSLMode.disable, nil),
        ("prefer", .prefer, CertificateVerification.none),
        ("require", .require, CertificateVerification.none),
        ("verify-ca", .verifyCA, .noHostnameVerification),
        ("verify-full", .verifyFull, .fullVerification),
    ])
    func everySSLModeChecksWhatLibpqChecks(value: String, mode: PostgresConnectionSettings.SSLMode, verification: CertificateVerification?) throws {
        let settings = try PostgresConnectionSettings(url: "\(Self.base)?sslmode=\(value)")
        #expect(settings.sslMode == mode)
        #expect(settings.tlsConfiguration?.certificateVerification == verification)
        #expect(settings.rootCertificates == nil, "no CA named: verify-* use the system's roots")
    }

    @Test func requireWithACAChecksTheChainAsVerifyCADoes() throws {
        let ca = try Self.caFile()
        let settings = try PostgresConnectionSettings(url: "\(Self.base)?sslmode=require", caFile: ca)
        #expect(settings.tlsConfiguration?.certificateVerification == .noHostnameVerification)
        #expect(settings.rootCertificates?.count == 1)
    }

    @Test func theCAComesFromTheVariableOrFromSSLRootCert() throws {
        let ca = try Self.caFile()
        let fromURL = try PostgresConnectionSettings(url: "\(Self.base)?sslmode=verify-full&sslrootcert=\(ca)")
        #expect(fromURL.rootCertificates?.count == 1)
        // The variable wins: the URL's file need not exist then.
        let fromVariable = try PostgresConnectionSettings(url: "\(Self.base)?sslmode=verify-full&sslrootcert=/nonexistent", caFile: ca)
        #expect(fromVariable.rootCertificates?.count == 1)
        // libpq's `sslrootcert=system`: the system's trusted roots.
        #expect(try PostgresConnectionSettings(url: "\(Self.base)?sslmode=verify-full&sslrootcert=system").rootCertificates == nil)
    }

    @Test(arguments: ["verify_full", "allow", "REQUIRE", "", "true"])
    func anUnknownSSLModeIsRefusedByNameWithTheAcceptedOnes(value: String) {
        let error = #expect(throws: ConfigurationError.self) {
            try PostgresConnectionSettings(url: "\(Self.base)?sslmode=\(value)")
        }
        let message = error?.description ?? ""
        #expect(message.contains("sslmode '\(value)'"))
        #expect(message.contains("disable, prefer, require, verify-ca, verify-full"))
        #expect(!message.contains("hunter2"), "the password never appears")
    }

    @Test func aMissingOrUnreadableCAIsAClearError() throws {
        let missing = #expect(throws: ConfigurationError.self) {
            try PostgresConnectionSettings(url: "\(Self.base)?sslmode=verify-ca", caFile: "/nonexistent/ca.pem")
        }
        #expect(missing?.description.contains("KEYWAY_DATABASE_CA_FILE names '/nonexistent/ca.pem'") == true)
        #expect(missing?.description.contains("cannot be read") == true)

        let fromURL = #expect(throws: ConfigurationError.self) {
            try PostgresConnectionSettings(url: "\(Self.base)?sslmode=verify-ca&sslrootcert=/nonexistent/root.crt")
        }
        #expect(fromURL?.description.contains("sslrootcert") == true)
        #expect(fromURL?.description.contains("hunter2") == false)

        let notPEM = FileManager.default.temporaryDirectory.appendingPathComponent("keyway-not-a-ca-\(UUID().uuidString).pem").path
        try Data("not a certificate".utf8).write(to: URL(fileURLWithPath: notPEM))
        defer { try? FileManager.default.removeItem(atPath: notPEM) }
        let garbage = #expect(throws: ConfigurationError.self) {
            try PostgresConnectionSettings(url: "\(Self.base)?sslmode=verify-ca", caFile: notPEM)
        }
        #expect(garbage?.description.contains("holds no PEM certificate") == true)
    }

    @Test func aURLThatIsNotPostgresIsRefused() {
        #expect(throws: ConfigurationError.self) { try PostgresConnectionSettings(url: "mysql://db/keyway") }
        #expect(throws: ConfigurationError.self) { try PostgresConnectionSettings(url: "postgres:///keyway") }
    }

    /// A self-signed CA certificate in a temporary file. Only its public part is kept: parsing needs no key.
    static func caFile() throws -> String {
        let path = FileManager.default.temporaryDirectory.appendingPathComponent("keyway-test-ca-\(UUID().uuidString).pem").path
        try Data(Self.caPEM.utf8).write(to: URL(fileURLWithPath: path))
        return path
    }

    static let caPEM = """
        -----BEGIN CERTIFICATE-----
        MIIBkzCCATmgAwIBAgIUYm5sqWKLewL+sNEsd9Jrdn/IC+MwCgYIKoZIzj0EAwIw
        HjEcMBoGA1UEAwwTS2V5d2F5IHVuaXQtdGVzdCBDQTAgFw0yNjExMjkxOTM5NTZa
        GA8yMTI2MTEwNTE5Mzk1NlowHjEcMBoGA1UEAwwTS2V5d2F5IHVuaXQtdGVzdCBD
        QTBZMBMGByqGSM49AgEGCCqGSM49AwEHA0IABIFp42+vFPx096RY5qTCql1ycHyA
        iNaWLJTFKy6ObaY4KCaVCHhSn78HKD+VOBWTfaktd/lF65U4oQ7Mh1cJghCjUzBR
        MB0GA1UdDgQWBBSp1hc6fv+V188FzgbeXLkzVvXENTAfBgNVHSMEGDAWgBSp1hc6
        fv+V188FzgbeXLkzVvXENTAPBgNVHRMBAf8EBTADAQH/MAoGCCqGSM49BAMCA0gA
        MEUCIGbWe9aAfgajJw7MXCr3dM9Vr45R93xTVKl8VAlOYPLFAiEAs1EZxwWv/7J2
        GSkgbxQv3n2juAFKh1kosrCm/XRXJaw=
        -----END CERTIFICATE-----
        """
}
