public import ArgumentParser
import Foundation
public import KeywayCore
import KeywayHTTP
import Logging

/// Options every command that opens the database shares.
struct DatabaseOptions: ParsableArguments {
    @Option(name: .long, help: ArgumentHelp("SQLite database file. [env: KEYWAY_DATABASE] [default: keyway-data/keyway.sqlite]", valueName: "path"))
    var database: String?

    /// The configuration from the environment, with this command's options applied.
    func configuration() throws -> KeywayConfiguration {
        var configuration: KeywayConfiguration
        do {
            configuration = try KeywayConfiguration(environment: ProcessInfo.processInfo.environment)
        } catch {
            throw CommandError("\(error)")
        }
        if let database { configuration.databasePath = database }
        return configuration
    }

    /// The user-token service: the master key from `KEYWAY_MASTER_KEY`, or the
    /// `master.key` file beside the database, created on first use.
    func userTokens(_ configuration: KeywayConfiguration, store: any KeywayStore, logger: Logger) async throws -> UserTokens {
        let masterKey: MasterKey
        if let configured = configuration.masterKey {
            masterKey = try MasterKey(base64: configured)
        } else if configuration.databaseURL != nil {
            // Instances on one PostgreSQL must share the key that seals signing keys.
            throw CommandError(
                "KEYWAY_MASTER_KEY is required with KEYWAY_DATABASE_URL, the same on every instance (generate one with: openssl rand -base64 32)."
            )
        } else {
            let folder = URL(fileURLWithPath: configuration.databasePath).deletingLastPathComponent()
            // A new key is made only while nothing is sealed: a lost file must not pass for a first start.
            do {
                masterKey = try MasterKey.loadOrCreate(
                    file: folder.appendingPathComponent("master.key").path,
                    mayCreate: !(try await store.hasSigningKeys()),
                    logger: logger
                )
            } catch let problem as ConfigurationProblem {
                throw CommandError(problem.description)
            }
        }
        return UserTokens(
            store: store,
            masterKey: masterKey,
            issuer: configuration.effectivePublicURL,
            lifetime: TimeInterval(configuration.userTokenMinutes * 60)
        )
    }
}

/// `--account` and `--environment`, for commands that act on one environment.
struct EnvironmentOptions: ParsableArguments {
    @Option(help: ArgumentHelp("The account's id (acct_…).", valueName: "id"))
    var account: String

    @Option(help: ArgumentHelp("development or production.", valueName: "environment"))
    var environment: KeywayCore.Environment

    var accountID: AccountID { AccountID(rawValue: account) }
    var environmentID: EnvironmentID { EnvironmentID(accountID: accountID, environment: environment) }
}

/// `--account`, for commands that act on a whole account.
struct AccountOptions: ParsableArguments {
    @Option(help: ArgumentHelp("The account's id (acct_…).", valueName: "id"))
    var account: String

    var accountID: AccountID { AccountID(rawValue: account) }
}

extension KeywayCore.Environment: ExpressibleByArgument {}
