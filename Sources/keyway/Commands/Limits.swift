import ArgumentParser
import KeywayCore

struct Limits: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Set or show each environment's request limit per key.",
        discussion: """
            Without a setting an environment has its default: \(RateLimitPolicy.productionDefault.requestsPerSecond) requests a second \
            in production, \(RateLimitPolicy.developmentDefault.requestsPerSecond) in development. Running servers apply a change \
            within KEYWAY_REVOCATION_POLL_MS.
            """,
        subcommands: [SetLimit.self, Show.self]
    )

    struct SetLimit: AsyncParsableCommand {
        static let configuration = CommandConfiguration(commandName: "set", abstract: "Set an environment's request limit.")

        @OptionGroup var target: EnvironmentOptions

        @Option(
            help: ArgumentHelp(
                "Requests a second each key may make (1–\(RateLimitSetting.maximum)); none or 0 for no limit; default for the environment's default.",
                valueName: "N|none|default"
            )
        )
        var requestsPerSecond: String

        @OptionGroup var database: DatabaseOptions

        func validate() throws {
            do {
                _ = try RateLimitSetting(parsing: requestsPerSecond)
            } catch let error as KeywayError {
                throw ValidationError(error.message)
            }
        }

        func run() async throws {
            let setting = try RateLimitSetting(parsing: requestsPerSecond)
            try await database.withStore { (store: any KeywayStore) async throws -> Void in
                try await store.setRateLimit(setting, for: target.environmentID, audit: .cli)
                print("\(target.environment.rawValue): \(Limits.describe(setting, for: target.environment))")
            }
        }
    }

    struct Show: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Show an account's request limit per environment.")

        @OptionGroup var target: AccountOptions

        @OptionGroup var database: DatabaseOptions

        func run() async throws {
            try await database.withStore { (store: any KeywayStore) async throws -> Void in
                try await store.requireAccount(target.accountID)
                let limits = try await store.rateLimits()
                for environment in KeywayCore.Environment.allCases {
                    let setting = limits[EnvironmentID(accountID: target.accountID, environment: environment)] ?? .default
                    print("\(environment.rawValue): \(Limits.describe(setting, for: environment))")
                }
            }
        }
    }

    static func describe(_ setting: RateLimitSetting, for environment: KeywayCore.Environment) -> String {
        switch setting {
        case .default: "\(RateLimitPolicy.default(for: environment).requestsPerSecond) requests a second per key (default)"
        case .off: "no limit"
        case .requestsPerSecond(let value): "\(value) requests a second per key"
        }
    }
}
