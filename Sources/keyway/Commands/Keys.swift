import ArgumentParser
import Foundation
import KeywayCore
import KeywayHTTP
import Logging

struct Keys: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Generate, roll and list secret API keys.",
        subcommands: [Generate.self, Roll.self, List.self, ReportLeak.self]
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
            try await generateKey(target: target, output: output, database: database) { keys, environmentID in
                try await keys.generate(for: environmentID, audit: .cli).key
            }
        }
    }

    struct Roll: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Roll an environment's secret key: a new key now, the current one until the grace period ends.",
            discussion: """
                The new key is printed once, as by `keys generate`. The current key keeps working for --grace
                (now, 90s, 45m, 24h, 7d; at most 7 days), then is refused as revoked_api_key with
                revocationReason expired_after_roll. A key still in an earlier roll's grace stops now.
                """
        )

        @OptionGroup var target: EnvironmentOptions

        @Option(help: ArgumentHelp("How long the current key keeps working: now, or a number with s, m, h or d, at most 7d.", valueName: "length"))
        var grace: String

        @Option(help: ArgumentHelp("Write the key to this new file (mode 0600) instead of standard output.", valueName: "file"))
        var output: String?

        @OptionGroup var database: DatabaseOptions

        func run() async throws {
            let grace: KeyGrace
            do {
                grace = try KeyGrace(parsing: self.grace)
            } catch {
                throw ValidationError("--grace: \(error.message)")
            }
            try await generateKey(target: target, output: output, database: database) { keys, environmentID in
                let rolled = try await keys.roll(for: environmentID, grace: grace, audit: .cli)
                if grace.seconds > 0 {
                    let end = grace.end(after: rolled.record.createdAt).formatted(Date.ISO8601FormatStyle(includingFractionalSeconds: true))
                    FileHandle.standardError.write(Data("The previous key keeps working until \(end).\n".utf8))
                }
                return rolled.key
            }
        }
    }

    /// Makes a key with `make` and prints it once, or writes it to a new `output` file.
    private static func generateKey(
        target: EnvironmentOptions,
        output: String?,
        database: DatabaseOptions,
        make: @escaping @Sendable (SecretKeys, EnvironmentID) async throws -> GeneratedSecretKey
    ) async throws {
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
            let generated = try await make(keys, target.environmentID)
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

    struct ReportLeak: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "report-leak",
            abstract: "Revoke a leaked key at once: reads the key from standard input.",
            discussion: """
                The key is read from standard input (never from an argument, which the shell's history and ps would keep).
                A key that is active, or in a grace period after a roll, is revoked now with revocationReason leaked and
                recorded in the audit log with --url and --source; running servers refuse it within the bound of a revoked key.
                """
        )

        @Option(help: ArgumentHelp("Where the key was found.", valueName: "url"))
        var url: String?

        @Option(help: ArgumentHelp("How it was found (e.g. content, commit, a ticket number).", valueName: "source"))
        var source: String?

        @OptionGroup var database: DatabaseOptions

        func run() async throws {
            guard let line = readLine(strippingNewline: true) else {
                throw CommandError("Give the leaked key on standard input, e.g.: keyway keys report-leak < leaked-key.txt")
            }
            let token = line.trimmingCharacters(in: .whitespaces)
            guard (try? SecretKeyFormat.parse(token[...])) != nil else {
                throw CommandError("That is not a Keyway key (kw_dev_… or kw_prod_…, 43 characters): nothing was revoked.")
            }
            try await database.withStore { (store: any KeywayStore) async throws -> Void in
                let keys = SecretKeys(store: store)
                switch try await keys.reportLeaked(token[...], report: LeakReport(url: url, source: source ?? "cli"), audit: .cli) {
                case .unknown:
                    throw CommandError("No Keyway key matches it: nothing was revoked.")
                case .alreadyRevoked(let record):
                    print("\(record.hint) (\(record.environmentID.environment.rawValue) of \(record.environmentID.accountID)) was already revoked.")
                case .revoked(let record, _):
                    print(
                        "Revoked \(record.hint) (\(record.environmentID.environment.rawValue) of \(record.environmentID.accountID)) as leaked. "
                            + "Generate a new key: keyway keys generate --account \(record.environmentID.accountID) --environment \(record.environmentID.environment.rawValue)"
                    )
                }
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
                let now = Date()
                let rows = records.map { record in
                    [
                        record.hint, record.environmentID.environment.rawValue,
                        Self.status(of: record, at: now),
                        record.createdAt.formatted(.iso8601), record.createdBy,
                        record.lastUsedAt?.formatted(.iso8601) ?? "never",
                    ]
                }
                print(table(["KEY", "ENVIRONMENT", "STATUS", "CREATED", "BY", "LAST USED"], rows))
            }
        }

        /// `active`, `in grace until …`, or `revoked … (reason)`.
        static func status(of record: SecretKeyRecord, at date: Date) -> String {
            guard let revokedAt = record.revokedAt else { return "active" }
            if let end = record.graceEnd(at: date) { return "in grace until \(end.formatted(.iso8601))" }
            return "revoked \(revokedAt.formatted(.iso8601)) (\(record.revocationReason?.rawValue ?? "regenerated"))"
        }
    }
}
