import ArgumentParser
import KeywayCore

struct Origins: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Set which browser origins may call user-token endpoints (CORS).",
        subcommands: [SetOrigins.self, List.self]
    )

    struct SetOrigins: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "set",
            abstract: "Replace an environment's allowed origins.",
            discussion: "Each origin is scheme://host[:port], e.g. https://app.example.com. Give none to allow no origin."
        )

        @OptionGroup var target: EnvironmentOptions

        @Argument(help: "The allowed origins.")
        var origins: [String] = []

        @OptionGroup var database: DatabaseOptions

        func validate() throws {
            for origin in origins {
                do {
                    _ = try BrowserOrigin(origin)
                } catch {
                    throw ValidationError(error.message)
                }
            }
        }

        func run() async throws {
            // Stored as browsers send them, so the CORS check is a plain comparison.
            let origins = try origins.map { origin in try BrowserOrigin(origin) }
            try await database.withStore { (store: any KeywayStore) async throws -> Void in
                try await store.setAllowedOrigins(origins, for: target.environmentID, audit: .cli)
                print(
                    origins.isEmpty
                        ? "No origin may call user-token endpoints of \(target.environment.rawValue)."
                        : "Allowed origins for \(target.environment.rawValue): \(origins.map(\.serialized).joined(separator: ", "))"
                )
            }
        }
    }

    struct List: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Show an account's allowed origins per environment.")

        @OptionGroup var target: AccountOptions

        @OptionGroup var database: DatabaseOptions

        func run() async throws {
            try await database.withStore { (store: any KeywayStore) async throws -> Void in
                try await store.requireAccount(target.accountID)
                for environment in KeywayCore.Environment.allCases {
                    let origins = try await store.allowedOrigins(for: EnvironmentID(accountID: target.accountID, environment: environment))
                    print("\(environment.rawValue): \(origins.isEmpty ? "(none)" : origins.joined(separator: " "))")
                }
            }
        }
    }
}
