import Foundation
import KeywayCore
import KeywayHTTP
import KeywayPostgres
import Logging
import Testing

@testable import keyway

/// The executable's settings — database, master key, key cache and limit, user tokens, log —
/// each read and checked once, in `Settings`: its default, a good value, and a bad one
/// refused with the variable's name.
@Suite struct SettingsTests {
    static let masterKey = Data(repeating: 1, count: 32).base64EncodedString()

    @Test func defaultsRunOutOfTheBox() throws {
        let settings = try Settings(environment: [:])
        #expect(settings.server == ServerConfiguration())
        // Every default, pinned: a changed default is a changed promise of the README's table.
        #expect(settings.databasePath == "keyway-data/keyway.sqlite")
        #expect(settings.postgres == nil)
        #expect(settings.databasePoolSize == 10)
        #expect(settings.databaseConnectTimeoutMilliseconds == 5000)
        #expect(settings.keyLookupTimeoutMilliseconds == 5000)
        #expect(settings.masterKey == nil)
        #expect(settings.logLevel == .info)
        #expect(settings.keyCacheLimit == 10_000)
        #expect(settings.keyGenerationsPerMinute == 20)
        #expect(settings.keyGenerationLimit == KeyGenerationLimit(count: 20, windowSeconds: 60))
        #expect(settings.userTokenMinutes == 30)
    }

    @Test func everyVariableIsRead() throws {
        let settings = try Settings(environment: [
            "KEYWAY_PORT": "9000", "KEYWAY_DATABASE": "/var/lib/keyway/db.sqlite", "KEYWAY_LOG_LEVEL": "DEBUG",
            "KEYWAY_KEY_CACHE_LIMIT": "500", "KEYWAY_USER_TOKEN_MINUTES": "60", "KEYWAY_MASTER_KEY": Self.masterKey,
            "KEYWAY_DATABASE_URL": "postgres://keyway:secret@db.internal:5432/keyway?sslmode=require", "KEYWAY_DATABASE_POOL_SIZE": "4",
            "KEYWAY_DATABASE_CONNECT_TIMEOUT_MS": "1500", "KEYWAY_KEY_GENERATIONS_PER_MINUTE": "5", "KEYWAY_KEY_LOOKUP_TIMEOUT_MS": "700",
        ])
        #expect(settings.server.port == 9000, "the server's own settings are read too")
        #expect(settings.databasePath == "/var/lib/keyway/db.sqlite")
        #expect(settings.logLevel == .debug)
        #expect(settings.keyCacheLimit == 500)
        #expect(settings.userTokenMinutes == 60)
        #expect(settings.masterKey != nil)
        #expect(settings.postgres?.host == "db.internal")
        #expect(settings.postgres?.database == "keyway")
        #expect(settings.postgres?.sslMode == .require)
        #expect(settings.databasePoolSize == 4)
        #expect(settings.databaseConnectTimeoutMilliseconds == 1500)
        #expect(settings.keyGenerationLimit == KeyGenerationLimit(count: 5, windowSeconds: 60))
        #expect(settings.keyLookupTimeoutMilliseconds == 700)
    }

    @Test(arguments: [
        ("KEYWAY_LOG_LEVEL", "loud"), ("KEYWAY_KEY_CACHE_LIMIT", "-1"), ("KEYWAY_USER_TOKEN_MINUTES", "61"),
        ("KEYWAY_MASTER_KEY", "dG9vIHNob3J0"), ("KEYWAY_DATABASE_URL", "mysql://db/keyway"),
        ("KEYWAY_DATABASE_URL", "postgres://db/keyway?sslmode=verify_full"), ("KEYWAY_DATABASE_POOL_SIZE", "0"),
        ("KEYWAY_DATABASE_CONNECT_TIMEOUT_MS", "5"), ("KEYWAY_DATABASE_CA_FILE", "/nonexistent/ca.pem"),
        ("KEYWAY_KEY_GENERATIONS_PER_MINUTE", "0"), ("KEYWAY_KEY_LOOKUP_TIMEOUT_MS", "10"), ("KEYWAY_PORT", "70000"),
    ])
    func badValuesNameTheirVariable(variable: String, value: String) {
        // The CA file is read with the URL it is for; alone it is refused as pointless.
        var environment = [variable: value]
        if variable == "KEYWAY_DATABASE_CA_FILE" { environment["KEYWAY_DATABASE_URL"] = "postgres://db.internal/keyway?sslmode=verify-ca" }
        do {
            _ = try Settings(environment: environment)
            Issue.record("\(variable)=\(value) was accepted")
        } catch {
            #expect(error.variable == variable)
            #expect("\(error)".hasPrefix(variable))
            if variable == "KEYWAY_MASTER_KEY" { #expect(!"\(error)".contains(value), "a secret is never repeated") }
        }
    }

    /// On SQLite the CA file is unused, as before settings moved; one that cannot be read is still refused.
    @Test func aCAFileWithoutPostgreSQLIsUnusedButMustBeReadable() throws {
        let settings = try Settings(environment: ["KEYWAY_DATABASE_CA_FILE": "/etc/hostname"])
        #expect(settings.postgres == nil)
        #expect(
            throws: ConfigurationError(variable: "KEYWAY_DATABASE_CA_FILE", message: "names '/nonexistent/ca.pem', which is missing or not readable")
        ) {
            try Settings(environment: ["KEYWAY_DATABASE_CA_FILE": "/nonexistent/ca.pem"])
        }
    }

    /// PostgreSQL needs the same key on every instance; SQLite makes its file once and
    /// never again while anything is sealed under it.
    @Test func theMasterKeyPolicyFollowsTheDatabase() async throws {
        let path = FileManager.default.temporaryDirectory
            .appendingPathComponent("keyway-settings-\(UUID().uuidString)").appendingPathComponent("keyway.sqlite").path
        try FileManager.default.createDirectory(atPath: (path as NSString).deletingLastPathComponent, withIntermediateDirectories: true)
        let store = SealedKeys(hasKeys: false)
        let logger = Logger(label: "test")
        let missing = await #expect(throws: ConfigurationError.self) {
            try await MasterKey.forDeployment(configured: nil, sharedDatabase: true, databasePath: path, store: store, logger: logger)
        }
        #expect(missing?.variable == "KEYWAY_MASTER_KEY")
        #expect(missing?.description.contains("is required with KEYWAY_DATABASE_URL") == true)

        let configured = try MasterKey(base64: Self.masterKey)
        _ = try await MasterKey.forDeployment(configured: configured, sharedDatabase: true, databasePath: path, store: store, logger: logger)
        #expect(!FileManager.default.fileExists(atPath: (path as NSString).deletingLastPathComponent + "/master.key"))

        _ = try await MasterKey.forDeployment(configured: nil, sharedDatabase: false, databasePath: path, store: store, logger: logger)
        let keyFile = (path as NSString).deletingLastPathComponent + "/master.key"
        #expect(FileManager.default.fileExists(atPath: keyFile), "created beside the SQLite file")
        try FileManager.default.removeItem(atPath: keyFile)
        await #expect(throws: ConfigurationError.self, "a lost file is not a first start") {
            try await MasterKey.forDeployment(
                configured: nil,
                sharedDatabase: false,
                databasePath: path,
                store: SealedKeys(hasKeys: true),
                logger: logger
            )
        }
    }
}

/// A signing-key store that only answers whether anything is sealed.
private struct SealedKeys: SigningKeyStore {
    let hasKeys: Bool
    func signingKeys(for environmentID: EnvironmentID) async throws -> [SigningKeyRecord] { [] }
    func signingKey(id: String) async throws -> SigningKeyRecord? { nil }
    func hasSigningKeys() async throws -> Bool { hasKeys }
    func insertSigningKey(_ key: SigningKeyRecord, retiringActive: Bool, audit: AuditContext) async throws -> SigningKeyRecord { key }
}
