import Foundation
import HTTPTypes
import Hummingbird
import HummingbirdTesting
import KeywayCore
import Testing

@testable import KeywayHTTP

/// Members, roles and invitations through the dashboard: every action for every role.
@Suite struct MembersTests {
    static let password = "correct horse battery"

    /// An account with an owner (signed up), a developer and a viewer (invited and joined),
    /// a webhook endpoint in each environment; one browser signed in per role.
    struct Team {
        let server: TestServer
        let account: AccountID
        let browsers: [MemberRole: TestBrowser]
        let members: [MemberRole: Member]
        let endpoints: [Environment: WebhookEndpointID]
    }

    func withTeam<Value: Sendable>(_ body: @Sendable (Team) async throws -> Value) async throws -> Value {
        let server = try await TestServer.make(passwordHasher: CountingHasher())
        return try await server.test { client in
            let owner = TestBrowser(client)
            _ = try await owner.signUp(email: "owner@team.test", password: Self.password, company: "Team")
            let ownerMember = try #require(try await server.store.memberCredentials(email: "owner@team.test")?.member)
            var browsers: [MemberRole: TestBrowser] = [.owner: owner]
            var members: [MemberRole: Member] = [.owner: ownerMember]
            for role in [MemberRole.developer, .viewer] {
                let email = "\(role.rawValue)@team.test"
                let link = try await Self.invite(email, as: role, by: owner)
                let browser = TestBrowser(client)
                let joined = try await Self.join(link, password: Self.password, browser: browser)
                #expect(joined.status == .seeOther, "\(joined.html)")
                browsers[role] = browser
                members[role] = try #require(try await server.store.memberCredentials(email: email)?.member)
            }
            var endpoints: [Environment: WebhookEndpointID] = [:]
            for environment in Environment.allCases {
                endpoints[environment] = try await server.webhooks.createEndpoint(
                    in: EnvironmentID(accountID: ownerMember.accountID, environment: environment),
                    url: "https://hooks.example.com/\(environment.rawValue)",
                    events: [.userCreated],
                    audit: .cli
                ).0.id
            }
            return try await body(
                Team(server: server, account: ownerMember.accountID, browsers: browsers, members: members, endpoints: endpoints)
            )
        }
    }

    /// Invites `email` from the Members page; returns the link's path and query.
    static func invite(_ email: String, as role: MemberRole, by browser: TestBrowser) async throws -> String {
        try await browser.get("/dashboard/settings/members")
        let page = try await browser.post("/dashboard/settings/members/invitations", ["email": email, "role": role.rawValue])
        #expect(page.status == .ok, "\(page.html)")
        let link = try #require(page.html.firstMatch(of: /id="invitation-link">([^<]+)</)?.1)
        return String(link[link.range(of: "/dashboard/join")!.lowerBound...])
    }

    static func join(_ link: String, password: String, browser: TestBrowser) async throws -> TestBrowser.Page {
        let page = try await browser.get(link)
        #expect(page.status == .ok, "\(page.html)")
        let token = try #require(hiddenField("invitation", in: page.html))
        return try await browser.post("/dashboard/join", ["invitation": token, "password": password])
    }

    /// One dashboard action that changes something, as a crafted POST would send it.
    struct Action: Sendable, CustomStringConvertible {
        let description: String
        let path: String
        let fields: [String: String]
        /// What the role rule is asked; `nil` for the webhook resend, which needs some webhook right.
        let guarded: MemberAction?
    }

    static func actions(_ team: Team) -> [Action] {
        var actions: [Action] = []
        for environment in Environment.allCases {
            let env = environment.rawValue
            let endpoint = team.endpoints[environment]!.rawValue
            actions += [
                Action(
                    description: "generate \(env)",
                    path: "/dashboard/settings/api-keys/\(env)",
                    fields: ["current": "none", "confirm": "yes", "password": password],
                    guarded: .manageKey(environment)
                ),
                Action(
                    description: "roll \(env)",
                    path: "/dashboard/settings/api-keys/\(env)/roll",
                    fields: ["current": "none", "grace": "1h", "password": password],
                    guarded: .manageKey(environment)
                ),
                Action(
                    description: "rate limit \(env)",
                    path: "/dashboard/settings/rate-limits/\(env)",
                    fields: ["requestsPerSecond": "7"],
                    guarded: .setRateLimit(environment)
                ),
                Action(
                    description: "add webhook \(env)",
                    path: "/dashboard/settings/webhooks/\(env)",
                    fields: ["url": "https://hooks.example.com/new-\(env)", "events": "user.created"],
                    guarded: .manageWebhooks(environment)
                ),
                Action(
                    description: "rotate webhook \(env)",
                    path: "/dashboard/settings/webhooks/endpoints/\(endpoint)/rotate",
                    fields: ["current": "none"],
                    guarded: .manageWebhooks(environment)
                ),
                Action(
                    description: "disable webhook \(env)",
                    path: "/dashboard/settings/webhooks/endpoints/\(endpoint)/state",
                    fields: ["enabled": "false"],
                    guarded: .manageWebhooks(environment)
                ),
                Action(
                    description: "delete webhook \(env)",
                    path: "/dashboard/settings/webhooks/endpoints/\(endpoint)/delete",
                    fields: [:],
                    guarded: .manageWebhooks(environment)
                ),
            ]
        }
        let developer = team.members[.developer]!.id.rawValue
        actions += [
            Action(description: "resend delivery", path: "/dashboard/settings/webhooks/deliveries/whd_none/resend", fields: [:], guarded: nil),
            Action(
                description: "invite",
                path: "/dashboard/settings/members/invitations",
                fields: ["email": "new@team.test", "role": "viewer"],
                guarded: .manageMembers
            ),
            Action(
                description: "revoke invitation",
                path: "/dashboard/settings/members/invitations/inv_none/revoke",
                fields: [:],
                guarded: .manageMembers
            ),
            Action(
                description: "change role",
                path: "/dashboard/settings/members/\(developer)/role",
                fields: ["role": "owner"],
                guarded: .manageMembers
            ),
            Action(description: "remove member", path: "/dashboard/settings/members/mem_none/remove", fields: [:], guarded: .manageMembers),
            Action(
                description: "account policy",
                path: "/dashboard/settings/members/policy",
                fields: ["developersManageProductionKeys": "on"],
                guarded: .manageAccount
            ),
        ]
        return actions
    }

    /// The rule, as a table: what each role may do (the default policy).
    @Test func theRoleRuleIsTheTable() {
        let policy = AccountPolicy()
        for action in MemberAction.all {
            #expect(MemberRole.owner.may(action, under: policy), "\(action)")
            #expect(!MemberRole.viewer.may(action, under: policy), "\(action)")
        }
        let developer: [MemberAction: Bool] = [
            .manageKey(.development): true, .setRateLimit(.development): true, .manageWebhooks(.development): true,
            .manageKey(.production): false, .setRateLimit(.production): false, .manageWebhooks(.production): false,
            .manageMembers: false, .manageAccount: false,
        ]
        #expect(Set(developer.keys) == Set(MemberAction.all))
        for (action, allowed) in developer { #expect(MemberRole.developer.may(action, under: policy) == allowed, "\(action)") }
        #expect(MemberRole.developer.may(.manageKey(.production), under: AccountPolicy(developersManageProductionKeys: true)))
        #expect(!MemberRole.developer.may(.setRateLimit(.production), under: AccountPolicy(developersManageProductionKeys: true)))
    }

    /// Every dashboard action for every role: a forbidden one is a 403 that records
    /// nothing, whatever the page showed; an allowed one is not refused for the role.
    @Test func everyRoleIsCheckedOnEveryActionServerSide() async throws {
        try await withTeam { team in
            for role in [MemberRole.viewer, .developer, .owner] {
                let browser = team.browsers[role]!
                for action in Self.actions(team) {
                    try await browser.get("/dashboard/settings/api-keys")
                    let before = try await team.server.store.auditEntries(for: team.account, matching: AuditQuery(limit: 1000)).count
                    let page = try await browser.post(action.path, action.fields)
                    let after = try await team.server.store.auditEntries(for: team.account, matching: AuditQuery(limit: 1000)).count
                    let allowed =
                        action.guarded.map { role.may($0, under: AccountPolicy()) } ?? (role != .viewer)
                    if allowed {
                        #expect(page.status != .forbidden, "\(role) may \(action): \(page.status)")
                    } else {
                        #expect(page.status == .forbidden, "\(role) may not \(action): \(page.status)")
                        #expect(page.html.contains("does not allow this"), "\(role) \(action)")
                        #expect(after == before, "\(role) \(action) recorded a change")
                    }
                }
            }
        }
    }

    @Test func pagesHideWhatTheRoleCannotDo() async throws {
        try await withTeam { team in
            let developerKeys = try await team.browsers[.developer]!.get("/dashboard/settings/api-keys")
            #expect(developerKeys.html.contains(#"id="development-generate""#))
            #expect(!developerKeys.html.contains(#"id="production-generate""#))
            #expect(developerKeys.html.contains(#"id="production-read-only""#))
            let viewerKeys = try await team.browsers[.viewer]!.get("/dashboard/settings/api-keys")
            #expect(!viewerKeys.html.contains(#"-generate""#))
            let viewerMembers = try await team.browsers[.viewer]!.get("/dashboard/settings/members")
            #expect(viewerMembers.html.contains("developer@team.test"), "viewers read the member list")
            #expect(!viewerMembers.html.contains(#"id="invite""#))
            let ownerMembers = try await team.browsers[.owner]!.get("/dashboard/settings/members")
            #expect(ownerMembers.html.contains(#"id="invite""#))

            // The owner lets developers manage production keys: the button appears, the POST works.
            _ = try await team.browsers[.owner]!.post("/dashboard/settings/members/policy", ["developersManageProductionKeys": "on"])
            let allowed = try await team.browsers[.developer]!.get("/dashboard/settings/api-keys")
            #expect(allowed.html.contains(#"id="production-generate""#))
        }
    }

    @Test func anInvitationWorksOnceAndNotAfterSevenDays() async throws {
        try await withTeam { team in
            let owner = team.browsers[.owner]!
            let link = try await Self.invite("once@team.test", as: .viewer, by: owner)
            let first = TestBrowser(owner.client)
            #expect(try await Self.join(link, password: Self.password, browser: first).status == .seeOther)
            let again = try await first.get(link)
            #expect(again.status == .gone, "a used link")

            // Expired: the store refuses at the time it is given.
            let (invitation, _, digest) = Invitation.make(to: "late@team.test", as: .viewer, in: team.account, by: "owner@team.test", at: Date())
            try await team.server.store.createInvitation(invitation, digest: digest, audit: .cli)
            await #expect(throws: KeywayError.invitationNotValid()) {
                try await team.server.store.acceptInvitation(
                    digest: digest,
                    as: .newMember(passwordHash: "h"),
                    at: Date().addingTimeInterval(Invitation.lifetime + 1),
                    audit: .cli
                )
            }
        }
    }

    @Test func theLastOwnerCannotBeDemotedOrRemoved() async throws {
        try await withTeam { team in
            let owner = team.browsers[.owner]!
            let me = team.members[.owner]!.id.rawValue
            try await owner.get("/dashboard/settings/members")
            let demote = try await owner.post("/dashboard/settings/members/\(me)/role", ["role": "developer"])
            #expect(demote.status == .conflict)
            #expect(demote.html.contains("at least one owner"))
            let remove = try await owner.post("/dashboard/settings/members/\(me)/remove", [:])
            #expect(remove.status == .conflict)
            #expect(try await team.server.store.member(team.members[.owner]!.id, in: team.account)?.role == .owner)
        }
    }

    @Test func badMemberFormsSayWhatIsWrong() async throws {
        try await withTeam { team in
            let owner = team.browsers[.owner]!
            try await owner.get("/dashboard/settings/members")
            let noEmail = try await owner.post("/dashboard/settings/members/invitations", ["email": "not an email", "role": "viewer"])
            #expect(noEmail.status == .badRequest)
            #expect(noEmail.html.contains(#"id="invite-error""#))
            let noRole = try await owner.post("/dashboard/settings/members/invitations", ["email": "x@team.test", "role": "admin"])
            #expect(noRole.status == .badRequest)
            let member = try await owner.post("/dashboard/settings/members/invitations", ["email": "viewer@team.test", "role": "viewer"])
            #expect(member.status == .conflict, "already a member")
            let badRole = try await owner.post("/dashboard/settings/members/\(team.members[.viewer]!.id.rawValue)/role", ["role": "admin"])
            #expect(badRole.status == .badRequest)
            #expect(try await team.server.store.openInvitations(of: team.account).isEmpty, "nothing was invited")
            let garbage = try await TestBrowser(owner.client).get("/dashboard/join?invitation=nonsense")
            #expect(garbage.status == .gone)
            #expect(garbage.html.contains("not valid"))
            #expect(garbage.headers[HTTPField.Name("Referrer-Policy")!] == "strict-origin", "the link's token is never sent on")
        }
    }

    @Test func aRemovedMembersSessionEndsAtOnce() async throws {
        try await withTeam { team in
            let developer = team.browsers[.developer]!
            #expect(try await developer.get("/dashboard/settings/api-keys").status == .ok)
            let owner = team.browsers[.owner]!
            try await owner.get("/dashboard/settings/members")
            let removed = try await owner.post("/dashboard/settings/members/\(team.members[.developer]!.id.rawValue)/remove", [:])
            #expect(removed.status == .seeOther)
            let after = try await developer.get("/dashboard/settings/api-keys")
            #expect(after.status == .seeOther && after.location == "/dashboard/signin", "the session ended with the membership")
        }
    }

    @Test func aRoleChangeAppliesToTheNextRequest() async throws {
        try await withTeam { team in
            let viewer = team.browsers[.viewer]!
            try await viewer.get("/dashboard/settings/rate-limits")
            #expect(try await viewer.post("/dashboard/settings/rate-limits/development", ["requestsPerSecond": "9"]).status == .forbidden)
            let owner = team.browsers[.owner]!
            try await owner.get("/dashboard/settings/members")
            _ = try await owner.post("/dashboard/settings/members/\(team.members[.viewer]!.id.rawValue)/role", ["role": "developer"])
            try await viewer.get("/dashboard/settings/rate-limits")
            #expect(try await viewer.post("/dashboard/settings/rate-limits/development", ["requestsPerSecond": "9"]).status == .seeOther)
        }
    }

    @Test func aMemberOfTwoAccountsSwitchesBetweenThem() async throws {
        try await withTeam { team in
            // The developer's own company invites them... the other way: the Team owner joins Other.
            let other = TestBrowser(team.browsers[.owner]!.client)
            _ = try await other.signUp(email: "boss@other.test", password: Self.password, company: "Other")
            let link = try await Self.invite("developer@team.test", as: .owner, by: other)
            let developer = team.browsers[.developer]!
            let joined = try await Self.join(link, password: "", browser: developer)
            #expect(joined.status == .seeOther, "signed in with the invited email: joins without a password")
            let keys = try await developer.get("/dashboard/settings/api-keys")
            #expect(keys.html.contains(#"id="account-switcher""#))
            #expect(keys.html.contains(#"id="my-role">Owner"#), "now working in Other, as its owner")
            let teamID = team.account.rawValue
            let otherTab = try #require(developer.csrfToken(in: keys.html))
            _ = try await developer.post("/dashboard/switch-account", ["account": teamID])
            // A form still open from Other must not act on Team.
            let stale = try await developer.post("/dashboard/settings/rate-limits/development", ["requestsPerSecond": "4"], csrf: otherTab)
            #expect(stale.status == .forbidden)
            let back = try await developer.get("/dashboard/settings/api-keys")
            #expect(back.html.contains(#"id="my-role">Developer"#))
            // An account they do not belong to is refused.
            let stranger = try await developer.post("/dashboard/switch-account", ["account": team.server.globex.id.rawValue])
            #expect(stranger.status == .notFound)
        }
    }
}
