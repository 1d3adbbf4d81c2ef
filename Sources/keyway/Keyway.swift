import ArgumentParser

@main
struct Keyway: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "keyway",
        abstract: "Keyway: API keys, sandboxed environments and users for your backend.",
        discussion: "Settings come from KEYWAY_* environment variables; command-line options override them.",
        subcommands: [
            Serve.self, Migrate.self, Accounts.self, Keys.self, SigningKeys.self, Origins.self, Limits.self, ServiceTokensCommand.self,
            Audit.self, WebhooksCommand.self, MembersCommand.self,
        ],
        defaultSubcommand: nil
    )
}
