import ArgumentParser
import Foundation
import KeywayCore
import Logging

struct SigningKeys: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "signing-keys",
        abstract: "Manage the keys that sign an environment's user tokens.",
        subcommands: [Rotate.self, List.self]
    )

    struct Rotate: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Start signing an environment's user tokens with a new key.",
            discussion: """
                Tokens signed by the previous key keep working until they expire, and its public key stays
                in the JWKS until then (at most an hour).
                """
        )

        @OptionGroup var target: EnvironmentOptions

        @OptionGroup var database: DatabaseOptions

        func run() async throws {
            let settings = try database.settings()
            try await database.withStore(settings) { (store: any KeywayStore) async throws -> Void in
                try await store.requireAccount(target.accountID)
                let tokens = try await database.userTokens(settings, store: store, logger: Logger(label: "keyway.cli"))
                let key = try await tokens.rotate(target.environmentID)
                print("New \(target.environment.rawValue) signing key \(key.id); the previous one stays published until its tokens expire.")
            }
        }
    }

    struct List: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "List an environment's signing keys (public data only).")

        @OptionGroup var target: EnvironmentOptions

        @OptionGroup var database: DatabaseOptions

        func run() async throws {
            try await database.withStore { (store: any KeywayStore) async throws -> Void in
                try await store.requireAccount(target.accountID)
                let records = try await store.signingKeys(for: target.environmentID)
                if records.isEmpty {
                    print("No signing key yet; the first user token creates one.")
                    return
                }
                print(
                    table(
                        ["KID", "CREATED", "STATUS"],
                        records.map {
                            [$0.id, $0.createdAt.formatted(.iso8601), $0.retiredAt.map { "retired \($0.formatted(.iso8601))" } ?? "active"]
                        }
                    )
                )
            }
        }
    }
}
