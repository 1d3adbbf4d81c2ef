import ArgumentParser
import Foundation
import KeywayCore

struct Accounts: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Create and list accounts.",
        subcommands: [Create.self, List.self]
    )

    struct Create: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Create an account with its development and production environments.",
            discussion: "Prints the new account's id."
        )

        @Option(help: "The company's name.")
        var name: String

        @OptionGroup var database: DatabaseOptions

        func validate() throws {
            do {
                _ = try MemberInput.companyName(name)
            } catch {
                throw ValidationError("--name: \(error.message)")
            }
        }

        func run() async throws {
            try await database.withStore { (store: any KeywayStore) async throws -> Void in
                let account = try await store.createAccount(name: try MemberInput.companyName(name), at: Date())
                print(account.id)
            }
        }
    }

    struct List: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "List accounts, oldest first.")

        @OptionGroup var database: DatabaseOptions

        func run() async throws {
            try await database.withStore { (store: any KeywayStore) async throws -> Void in
                let accounts = try await store.accounts()
                if accounts.isEmpty {
                    print("No accounts yet. Create one with: keyway accounts create --name \"Acme\"")
                    return
                }
                print(table(["ACCOUNT", "NAME", "CREATED"], accounts.map { [$0.id.rawValue, $0.name, $0.createdAt.formatted(.iso8601)] }))
            }
        }
    }
}
