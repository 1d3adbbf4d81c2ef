import ArgumentParser
import Foundation
import KeywayCore

struct ServiceTokensCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "service-tokens",
        abstract: "Create, list and revoke service tokens: the credentials your own services use for POST /keys/verify.",
        subcommands: [Create.self, List.self, Revoke.self]
    )

    struct Create: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Create a service token.",
            discussion: """
                The token is printed once, to standard output, and never again: store it in a secrets manager.
                With --output it is written to a new file with mode 0600 and only its hint is printed.
                A service token is not an account's key: it opens POST /keys/verify and nothing else.
                """
        )

        @Option(help: ArgumentHelp("A name to recognise and revoke it by: 1 to 64 of A-Z a-z 0-9 . _ -", valueName: "name"))
        var name: String

        @Option(help: ArgumentHelp("Write the token to this new file (mode 0600) instead of standard output.", valueName: "file"))
        var output: String?

        @OptionGroup var database: DatabaseOptions

        func validate() throws {
            guard ServiceTokens.isValidName(name) else {
                throw ValidationError("--name must be 1 to 64 of A-Z, a-z, 0-9, '.', '_' and '-'.")
            }
        }

        func run() async throws {
            if let output, FileManager.default.fileExists(atPath: output) {
                throw CommandError("\(output) already exists; choose a new file so no token is overwritten.")
            }
            let file = try output.map { try SecretFile(creating: $0, capacity: 64) }
            try await database.withStore { (store: any KeywayStore) async throws -> Void in
                let created = try await ServiceTokens(store: store).create(name: name)
                guard let file else {
                    print(created.token.revealPlaintext())
                    return
                }
                do {
                    try file.write(created.token.revealPlaintext() + "\n")
                } catch {
                    // The token exists now: this is its only copy.
                    FileHandle.standardError.write(Data("\(error) The new token is printed below instead; store it now.\n".utf8))
                    print(created.token.revealPlaintext())
                    throw ExitCode.failure
                }
                print("Wrote the service token '\(name)' \(created.token.hint) to \(file.path) (mode 0600).")
            }
        }
    }

    struct List: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "List service tokens by hint. Tokens are never shown.")

        @OptionGroup var database: DatabaseOptions

        func run() async throws {
            try await database.withStore { (store: any KeywayStore) async throws -> Void in
                let records = try await store.serviceTokens()
                guard !records.isEmpty else {
                    print("No service tokens yet. Create one with: keyway service-tokens create --name gateway")
                    return
                }
                let rows = records.map { record in
                    [
                        record.name, record.hint, record.id.rawValue,
                        record.revokedAt.map { "revoked \($0.formatted(.iso8601))" } ?? "active",
                        record.createdAt.formatted(.iso8601),
                    ]
                }
                print(table(["NAME", "TOKEN", "ID", "STATUS", "CREATED"], rows))
            }
        }
    }

    struct Revoke: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Revoke a service token by name or id.",
            discussion: "A running server refuses it within the bound of a revoked key (see docs/architecture.md)."
        )

        @Option(help: ArgumentHelp("The active token's name.", valueName: "name"))
        var name: String?

        @Option(help: ArgumentHelp("The token's id (svc_…), as `service-tokens list` shows it.", valueName: "id"))
        var id: String?

        @OptionGroup var database: DatabaseOptions

        func validate() throws {
            guard (name == nil) != (id == nil) else { throw ValidationError("Give exactly one of --name and --id.") }
        }

        func run() async throws {
            let reference: ServiceTokenReference = if let name { .name(name) } else { .id(ServiceTokenID(rawValue: id ?? "")) }
            try await database.withStore { (store: any KeywayStore) async throws -> Void in
                guard let revoked = try await ServiceTokens(store: store).revoke(reference) else {
                    throw CommandError("No active service token has the \(reference).")
                }
                print("Revoked the service token '\(revoked.name)' \(revoked.hint).")
            }
        }
    }
}
