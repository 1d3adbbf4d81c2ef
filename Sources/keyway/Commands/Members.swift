public import ArgumentParser
import Foundation
public import KeywayCore
import KeywayHTTP

extension MemberRole: ExpressibleByArgument {}

struct MembersCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "members",
        abstract: "List, invite and remove an account's dashboard members, and change their roles.",
        discussion: """
            Roles: owner (everything), developer (the development key, webhooks and limits; reads production's), \
            viewer (reads). An account keeps at least one owner. Keyway sends no email: `invite` prints a link, \
            valid 7 days and usable once, for you to send.
            """,
        subcommands: [List.self, Invite.self, Role.self, Remove.self, ResetTwoFactor.self]
    )

    /// `--member`: an id (mem_…) or an email.
    struct MemberOptions: ParsableArguments {
        @OptionGroup var target: AccountOptions

        @Option(help: ArgumentHelp("The member's id (mem_…) or email.", valueName: "member"))
        var member: String

        /// The member the option names, in the account.
        func resolve(in store: any KeywayStore) async throws -> Member {
            try await store.requireAccount(target.accountID)
            let wanted = member.trimmingCharacters(in: .whitespaces)
            // Emails as `invite` reads them: trimmed and lowercased.
            let email = (try? MemberInput.email(wanted)) ?? wanted
            guard
                let found = try await store.members(of: target.accountID).first(where: {
                    $0.id.rawValue == wanted || $0.email == email
                })
            else { throw KeywayError.memberNotFound() }
            return found
        }
    }

    struct List: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "List an account's members and open invitations.")

        @OptionGroup var target: AccountOptions
        @OptionGroup var database: DatabaseOptions

        func run() async throws {
            try await database.withStore { (store: any KeywayStore) async throws -> Void in
                try await store.requireAccount(target.accountID)
                let members = try await store.members(of: target.accountID)
                if members.isEmpty { print("No members yet: invite one with `keyway members invite`.") }
                if !members.isEmpty {
                    print(
                        table(
                            ["ID", "EMAIL", "ROLE", "TWO-FACTOR", "SINCE"],
                            members.map {
                                [$0.id.rawValue, $0.email, $0.role.rawValue, $0.hasTwoFactor ? "on" : "off", $0.createdAt.formatted(.iso8601)]
                            }
                        )
                    )
                }
                let invitations = try await store.openInvitations(of: target.accountID)
                guard !invitations.isEmpty else { return }
                print("")
                print(
                    table(
                        ["INVITATION", "EMAIL", "ROLE", "INVITED BY", "EXPIRES"],
                        invitations.map { invitation in
                            [
                                invitation.id.rawValue, invitation.email, invitation.role.rawValue, invitation.invitedBy,
                                invitation.isOpen(at: Date()) ? invitation.expiresAt.formatted(.iso8601) : "expired",
                            ]
                        }
                    )
                )
            }
        }
    }

    struct Invite: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Invite someone by email with a role; prints the invitation link (shown once).",
            discussion: "The link starts with KEYWAY_PUBLIC_URL. Inviting the same email again replaces the previous link."
        )

        @OptionGroup var target: AccountOptions

        @Option(help: ArgumentHelp("Who is invited.", valueName: "email"))
        var email: String

        @Option(help: ArgumentHelp("owner, developer or viewer.", valueName: "role"))
        var role: MemberRole

        @OptionGroup var database: DatabaseOptions

        func validate() throws {
            do {
                _ = try MemberInput.email(email)
            } catch {
                throw ValidationError("--email: \(error.message)")
            }
        }

        func run() async throws {
            let settings = try database.settings()
            let email = try MemberInput.email(self.email)
            try await database.withStore(settings) { (store: any KeywayStore) async throws -> Void in
                try await store.requireAccount(target.accountID)
                let (invitation, token, digest) = Invitation.make(to: email, as: role, in: target.accountID, by: "cli", at: Date())
                try await store.createInvitation(invitation, digest: digest, audit: .cli)
                let publicURL = settings.server.effectivePublicURL
                let base = publicURL.hasSuffix("/") ? String(publicURL.dropLast()) : publicURL
                let until = invitation.expiresAt.formatted(.iso8601)
                FileHandle.standardError.write(Data("Invited \(email) as \(role.rawValue); the link works once, until \(until):\n".utf8))
                print("\(base)/dashboard/join?invitation=\(token)")
            }
        }
    }

    struct Role: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Change a member's role (their next request follows it).")

        @OptionGroup var member: MemberOptions

        @Option(help: ArgumentHelp("owner, developer or viewer.", valueName: "role"))
        var role: MemberRole

        @OptionGroup var database: DatabaseOptions

        func run() async throws {
            try await database.withStore { (store: any KeywayStore) async throws -> Void in
                let found = try await member.resolve(in: store)
                guard let changed = try await store.setRole(role, of: found.id, in: found.accountID, audit: .cli, at: Date()) else {
                    throw KeywayError.memberNotFound()
                }
                print("\(changed.email) is now \(changed.role.rawValue).")
            }
        }
    }

    struct Remove: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Remove a member from the account; their sessions there end at once.")

        @OptionGroup var member: MemberOptions
        @OptionGroup var database: DatabaseOptions

        func run() async throws {
            try await database.withStore { (store: any KeywayStore) async throws -> Void in
                let found = try await member.resolve(in: store)
                guard try await store.removeMember(found.id, from: found.accountID, audit: .cli, at: Date()) else {
                    throw KeywayError.memberNotFound()
                }
                print("Removed \(found.email) from the account.")
            }
        }
    }

    struct ResetTwoFactor: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "reset-two-factor",
            abstract: "Turn off a member's two-factor sign-in (a lost phone and no recovery code); ends their sessions.",
            discussion: """
                The person's second factor is theirs in every account they belong to. They sign in with the password \
                alone next, and set two-factor up again (at once, when the account requires it).
                """
        )

        @OptionGroup var member: MemberOptions
        @OptionGroup var database: DatabaseOptions

        func run() async throws {
            try await database.withStore { (store: any KeywayStore) async throws -> Void in
                let found = try await member.resolve(in: store)
                guard
                    try await store.disableTwoFactor(
                        of: found.id,
                        keepingSession: nil,
                        audit: .member(.twoFactorDisabled, found, at: Date(), context: .cli, details: ["by": "operator reset"])
                    )
                else {
                    print("\(found.email) has no two-factor sign-in to reset.")
                    return
                }
                print("Two-factor sign-in of \(found.email) is off; their sessions ended.")
            }
        }
    }
}
