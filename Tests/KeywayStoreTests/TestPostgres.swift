import Foundation
import KeywayCore
import Logging

@testable import KeywayPostgres

/// Each PostgreSQL test gets its own database, copied from a migrated template.
enum TestPostgres {
    static let serverURL = ProcessInfo.processInfo.environment["KEYWAY_TEST_POSTGRES_URL"]
    static let logger = Logger(label: "keyway.tests.postgres", factory: { _ in SwiftLogNoOpLogHandler() })
    static let templateName = "keyway_template_\(ProcessInfo.processInfo.processIdentifier)"

    /// Creates and migrates the template once per test process.
    private static let template = Task<Void, any Error> {
        guard let url = serverURL else { return }
        let admin = try KeywayPostgresStore(url: url, poolSize: 1, logger: logger)
        try await running(admin) {
            try await admin.execute("DROP DATABASE IF EXISTS \(templateName)")
            try await admin.execute("CREATE DATABASE \(templateName)")
        }
        let template = try KeywayPostgresStore(url: url.replacingDatabase(with: templateName), poolSize: 1, logger: logger)
        try await running(template) { _ = try await template.migrate() }
    }

    /// A new database copied from the template, with its pool running for the rest of the process.
    static func freshStore() async throws -> KeywayPostgresStore {
        try await freshStores(1)[0]
    }

    /// `count` stores (pools) on one new database copied from the template.
    static func freshStores(
        _ count: Int,
        makeUserID: @escaping @Sendable (Date) -> UserID = UserID.generate(at:)
    ) async throws -> [KeywayPostgresStore] {
        guard let url = serverURL else { throw CancellationError() }
        try await template.value
        let name = "keyway_test_" + UUID().uuidString.replacingOccurrences(of: "-", with: "").lowercased()
        let admin = try KeywayPostgresStore(url: url, poolSize: 1, logger: logger)
        try await running(admin) {
            try await admin.execute("CREATE DATABASE \(name) TEMPLATE \(templateName)")
        }
        return try (0..<count).map { _ in
            let store = try KeywayPostgresStore(
                settings: try PostgresConnectionSettings(url: url.replacingDatabase(with: name)),
                poolSize: 4,
                connectTimeout: .seconds(5),
                logger: logger,
                makeUserID: makeUserID
            )
            Task.detached { await store.run() }
            return store
        }
    }

    /// Runs `body` while `store`'s pool runs, then stops the pool.
    static func running(_ store: KeywayPostgresStore, _ body: () async throws -> Void) async throws {
        try await store.run(while: body)
    }
}

extension String {
    /// A PostgreSQL URL naming another database.
    func replacingDatabase(with database: String) -> String {
        guard var components = URLComponents(string: self) else { return self }
        components.path = "/" + database
        return components.string ?? self
    }
}
