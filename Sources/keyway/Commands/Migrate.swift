import ArgumentParser
import KeywayHTTP
import KeywayPostgres
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
        let settings = try database.settings()
        let opened = try await openStore(settings, poolSize: 2, logger: Logger(label: "keyway.postgres"))
        var applied = opened.appliedMigrations
        if let postgres = opened.postgres {
            applied += try await opened.run { try await postgres.migrate() }
        }
        let name = opened.postgres == nil ? settings.databasePath : "PostgreSQL"
        for migration in applied { print("Applied migration: \(migration)") }
        print("Database \(name) is up to date.")
    }
}
