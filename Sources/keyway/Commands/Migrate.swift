import ArgumentParser
import KeywayHTTP
import KeywayPostgres
import KeywaySQLite
import Logging

struct Migrate: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Create or upgrade the database schema.",
        discussion: """
            Safe to run repeatedly, and from several processes at once on PostgreSQL. `serve` also runs it on the \
            embedded SQLite database, never on PostgreSQL.
            """
    )

    @OptionGroup var database: DatabaseOptions

    func run() async throws {
        let configuration = try database.configuration()
        let applied: [String]
        let name: String
        if let url = configuration.databaseURL {
            name = "PostgreSQL"
            let store = try await database.openPostgres(url: url, configuration, poolSize: 2, logger: Logger(label: "keyway.postgres"))
            applied = try await withThrowingTaskGroup(of: [String]?.self) { group in
                group.addTask {
                    await store.run()
                    return nil
                }
                defer { group.cancelAll() }
                return try await store.migrate()
            }
        } else {
            name = configuration.databasePath
            applied = try KeywaySQLiteStore.migrate(path: configuration.databasePath)
        }
        for migration in applied { print("Applied migration: \(migration)") }
        print("Database \(name) is up to date.")
    }
}
