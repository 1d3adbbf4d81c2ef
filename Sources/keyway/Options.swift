public import ArgumentParser
import Foundation
public import KeywayCore
import KeywayHTTP
import Logging

/// Options every command that opens the database shares.
struct DatabaseOptions: ParsableArguments {
    @Option(name: .long, help: ArgumentHelp("SQLite database file. [env: KEYWAY_DATABASE] [default: keyway-data/keyway.sqlite]", valueName: "path"))
    var database: String?

    /// The settings from the environment, with this command's options applied.
    func settings() throws -> Settings {
        var settings: Settings
        do {
            settings = try Settings(environment: ProcessInfo.processInfo.environment)
        } catch {
            throw CommandError("\(error)")
        }
        if let database { settings.databasePath = database }
        return settings
    }

    /// The user-token service, sealing signing keys under the deployment's master key.
    /// The key signing keys and webhook secrets are sealed under, by the deployment's policy.
    func masterKey(_ settings: Settings, store: any KeywayStore, logger: Logger) async throws -> MasterKey {
        do {
            return try await MasterKey.forDeployment(
                configured: settings.masterKey,
                sharedDatabase: settings.postgres != nil,
                databasePath: settings.databasePath,
                store: store,
                logger: logger
            )
        } catch let problem as ConfigurationError {
            throw CommandError(problem.description)
        }
    }

    /// Webhook endpoints and deliveries, their secrets sealed under `masterKey`.
    func webhooks(_ settings: Settings, store: any KeywayStore, masterKey: MasterKey) -> Webhooks {
        Webhooks(store: store, masterKey: masterKey, policy: WebhookURLPolicy(allowInsecure: settings.server.webhookAllowInsecure))
    }

    func userTokens(_ settings: Settings, store: any KeywayStore, logger: Logger) async throws -> UserTokens {
        try await userTokens(settings, store: store, masterKey: masterKey(settings, store: store, logger: logger))
    }

    func userTokens(_ settings: Settings, store: any KeywayStore, masterKey: MasterKey) -> UserTokens {
        UserTokens(
            store: store,
            masterKey: masterKey,
            issuer: settings.server.effectivePublicURL,
            lifetime: TimeInterval(settings.userTokenMinutes * 60)
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
