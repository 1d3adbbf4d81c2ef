import Foundation
public import KeywayCore
public import NIOSSL
import PostgresNIO

/// Where and how to reach PostgreSQL: `KEYWAY_DATABASE_URL` (and
/// `KEYWAY_DATABASE_CA_FILE`), read and checked once, here. The pool and the
/// LISTEN connection both take their TLS from it, so they follow the same rules.
///
/// TLS follows libpq's `sslmode`:
///
/// | sslmode | encrypted | certificate checked |
/// |---|---|---|
/// | `disable` | never | — |
/// | `prefer` (default) | when the server offers it | no |
/// | `require` | always | only against a CA, when one is named (then as `verify-ca`) |
/// | `verify-ca` | always | chain, against the CA |
/// | `verify-full` | always | chain and host name |
///
/// The CA is `KEYWAY_DATABASE_CA_FILE` or the URL's `sslrootcert` (a PEM file);
/// without either, `verify-ca` and `verify-full` use the system's trusted roots.
public struct PostgresConnectionSettings: Sendable {
    /// libpq's `sslmode` values.
    public enum SSLMode: String, CaseIterable, Sendable {
        case disable
        case prefer
        case require
        case verifyCA = "verify-ca"
        case verifyFull = "verify-full"
    }

    public var host: String
    public var port: Int
    public var username: String
    public var password: String?
    public var database: String?
    public var sslMode: SSLMode
    /// The CA certificates that must have signed the server's certificate, when named.
    public var rootCertificates: [NIOSSLCertificate]?

    /// Reads `url` (and the CA file); nothing is printed of the URL but the bad part.
    /// - Parameters:
    ///   - url: `postgres://user:password@host:port/database?sslmode=…&sslrootcert=…`.
    ///   - caFile: `KEYWAY_DATABASE_CA_FILE`, which wins over `sslrootcert`.
    /// - Throws: ``ConfigurationError`` naming the bad value and what is accepted.
    public init(url: String, caFile: String? = nil) throws(ConfigurationError) {
        guard let components = URLComponents(string: url), ["postgres", "postgresql"].contains(components.scheme ?? ""),
            let host = components.host, !host.isEmpty
        else {
            throw ConfigurationError(variable: "KEYWAY_DATABASE_URL", message: "must look like postgres://user:password@host:5432/database")
        }
        self.host = host
        self.port = components.port ?? 5432
        self.username = components.user?.removingPercentEncoding ?? "postgres"
        self.password = components.password?.removingPercentEncoding
        self.database = String(components.path.drop { $0 == "/" }).removingPercentEncoding

        let query = components.queryItems ?? []
        let mode = query.last { $0.name == "sslmode" }?.value
        if let mode {
            guard let parsed = SSLMode(rawValue: mode) else {
                throw ConfigurationError(
                    variable: "KEYWAY_DATABASE_URL",
                    message: "has sslmode '\(mode.filter { !$0.isNewline })', which is not one of "
                        + SSLMode.allCases.map(\.rawValue).joined(separator: ", ") + "."
                )
            }
            self.sslMode = parsed
        } else {
            // libpq's default: encrypt when the server offers it.
            self.sslMode = .prefer
        }

        let rootCertificateFile: (path: String, variable: String, source: String)?
        if let caFile {
            rootCertificateFile = (caFile, "KEYWAY_DATABASE_CA_FILE", "")
        } else if let path = query.last(where: { $0.name == "sslrootcert" })?.value, !path.isEmpty, path != "system" {
            rootCertificateFile = (path, "KEYWAY_DATABASE_URL", "has sslrootcert that ")
        } else {
            rootCertificateFile = nil
        }
        if let (path, variable, source) = rootCertificateFile {
            self.rootCertificates = try Self.certificates(path: path, variable: variable, source: source)
        }
    }

    /// - Parameter source: What precedes "names" in a message: empty for the CA-file variable itself.
    private static func certificates(path: String, variable: String, source: String) throws(ConfigurationError) -> [NIOSSLCertificate] {
        guard let data = FileManager.default.contents(atPath: path) else {
            throw ConfigurationError(variable: variable, message: "\(source)names '\(path)', which cannot be read (it is missing or not readable).")
        }
        let certificates = try? NIOSSLCertificate.fromPEMBytes(Array(data))
        guard let certificates, !certificates.isEmpty else {
            throw ConfigurationError(variable: variable, message: "\(source)names '\(path)', which holds no PEM certificate.")
        }
        return certificates
    }

    /// The TLS settings both the pool and the listener use; `nil` for `disable`.
    var tlsConfiguration: TLSConfiguration? {
        var tls = TLSConfiguration.makeClientConfiguration()
        switch sslMode {
        case .disable:
            return nil
        case .prefer:
            // A server may answer in plain text anyway, so a check would guarantee nothing.
            tls.certificateVerification = .none
        case .require:
            tls.certificateVerification = rootCertificates == nil ? .none : .noHostnameVerification
        case .verifyCA:
            tls.certificateVerification = .noHostnameVerification
        case .verifyFull:
            tls.certificateVerification = .fullVerification
        }
        if let rootCertificates {
            tls.trustRoots = .certificates(rootCertificates)
        }
        return tls
    }

    /// TLS for the connection pool.
    var clientTLS: PostgresClient.Configuration.TLS {
        guard let tls = tlsConfiguration else { return .disable }
        return sslMode == .prefer ? .prefer(tls) : .require(tls)
    }

    /// TLS for a single connection (the LISTEN one).
    /// - Throws: when the TLS context cannot be built.
    func connectionTLS() throws -> PostgresConnection.Configuration.TLS {
        guard let tls = tlsConfiguration else { return .disable }
        let context = try NIOSSLContext(configuration: tls)
        return sslMode == .prefer ? .prefer(context) : .require(context)
    }
}
