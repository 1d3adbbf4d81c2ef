import ArgumentParser
import Foundation
import KeywayCore
import KeywayHTTP
import Logging

struct Keys: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Generate and list secret API keys.",
        subcommands: [Generate.self, List.self]
    )

    struct Generate: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Generate an environment's secret key, revoking its previous key immediately.",
            discussion: """
                The key is printed once, to standard output, and never again: store it in a secrets manager.
                With --output it is written to a new file with mode 0600 and only its hint is printed.
                A running server stops accepting the previous key within KEYWAY_REVOCATION_POLL_MS.
                """
        )

        @OptionGroup var target: EnvironmentOptions

        @Option(help: ArgumentHelp("Write the key to this new file (mode 0600) instead of standard output.", valueName: "file"))
        var output: String?

        @OptionGroup var database: DatabaseOptions

        func run() async throws {
            let settings = try database.settings()
            if let output, FileManager.default.fileExists(atPath: output) {
                throw CommandError("\(output) already exists; choose a new file so no key is overwritten.")
            }
            // The file is made before the key: a file that cannot be written must fail the
            // command while the previous key still works, not after it was revoked.
            let file = try output.map { try SecretFile(creating: $0, capacity: 64) }
            try await database.withStore(settings) { (store: any KeywayStore) async throws -> Void in
                var logger = Logger(label: "keyway.cli")
                logger.logLevel = .warning
                // The same limit as the dashboard's, counted in the database, so a script looping
                // regenerations is refused too.
                let keys = SecretKeys(store: store, generationLimit: settings.keyGenerationLimit, logger: logger)
                let environmentID = target.environmentID
                let generated = try await keys.generate(for: environmentID, createdBy: "cli").key
                guard let file else {
                    print(generated.revealPlaintext())
                    return
                }
                do {
                    try file.write(generated.revealPlaintext() + "\n")
                } catch {
                    // The previous key is revoked already: this is the only copy of the new one.
                    FileHandle.standardError.write(Data("\(error) The new key is printed below instead; store it now.\n".utf8))
                    print(generated.revealPlaintext())
                    throw ExitCode.failure
                }
                print("Wrote the new \(target.environment.rawValue) key \(generated.hint) to \(file.path) (mode 0600).")
            }
        }
    }

    struct List: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "List an account's keys by hint. Secrets are never shown."
        )

        @OptionGroup var target: AccountOptions

        @OptionGroup var database: DatabaseOptions

        func run() async throws {
            try await database.withStore { (store: any KeywayStore) async throws -> Void in
                try await store.requireAccount(target.accountID)
                let records = try await store.secretKeys(for: target.accountID)
                if records.isEmpty {
                    print("No keys yet. Generate one with: keyway keys generate --account \(target.account) --environment development")
                    return
                }
                let rows = records.map { record in
                    [
                        record.hint, record.environmentID.environment.rawValue,
                        record.revokedAt.map { "revoked \($0.formatted(.iso8601))" } ?? "active",
                        record.createdAt.formatted(.iso8601), record.createdBy,
                        record.lastUsedAt?.formatted(.iso8601) ?? "never",
                    ]
                }
                print(table(["KEY", "ENVIRONMENT", "STATUS", "CREATED", "BY", "LAST USED"], rows))
            }
        }
    }
}
