import Foundation
import KeywayCore
import Testing

/// Memberships, roles and invitations: the same promises on every store, under races too.
@Suite struct MembershipStoreTests {
    /// An account with its owner, and a way to add members by invitation.
    func team(_ kind: StoreKind) async throws -> (any KeywayStore, Member) {
        let store = try await kind.makeStore()
        let (_, owner) = try await store.createAccount(name: "Team", ownerEmail: "owner@team.test", passwordHash: "h", at: Date(), audit: .system)
        return (store, owner)
    }

    func add(_ email: String, as role: MemberRole, to account: AccountID, in store: any KeywayStore) async throws -> Member {
        let (invitation, _, digest) = Invitation.make(to: email, as: role, in: account, by: "owner@team.test", at: Date())
        try await store.createInvitation(invitation, digest: digest, audit: .system)
        return try await store.acceptInvitation(digest: digest, as: .newMember(passwordHash: "h"), at: Date(), audit: .system)
    }

    @Test(arguments: StoreKind.allCases)
    func anInvitationIsAcceptedOnceEvenByTwoAtOnce(kind: StoreKind) async throws {
        let (store, owner) = try await team(kind)
        let (invitation, token, digest) = Invitation.make(to: "dev@team.test", as: .developer, in: owner.accountID, by: owner.email, at: Date())
        #expect(!token.isEmpty)
        try await store.createInvitation(invitation, digest: digest, audit: .system)
        #expect(try await store.openInvitations(of: owner.accountID).map(\.id) == [invitation.id])
        let outcomes = await withTaskGroup(of: Bool.self) { group in
            for _ in 0..<4 {
                group.addTask {
                    (try? await store.acceptInvitation(digest: digest, as: .newMember(passwordHash: "h"), at: Date(), audit: .system)) != nil
                }
            }
            return await group.reduce(into: [Bool]()) { $0.append($1) }
        }
        #expect(outcomes.filter { $0 }.count == 1, "exactly one acceptance: \(outcomes)")
        let members = try await store.members(of: owner.accountID)
        #expect(members.map(\.email) == ["owner@team.test", "dev@team.test"])
        #expect(members.last?.role == .developer)
        #expect(try await store.openInvitations(of: owner.accountID).isEmpty)
        await #expect(throws: KeywayError.invitationNotValid()) {
            try await store.acceptInvitation(digest: digest, as: .newMember(passwordHash: "h"), at: Date(), audit: .system)
        }
        let joined = try await store.auditEntries(for: owner.accountID, matching: AuditQuery(event: .memberJoined))
        #expect(joined.count == 1)
    }

    @Test(arguments: StoreKind.allCases)
    func invitationsExpireAreRevokedAndReplaced(kind: StoreKind) async throws {
        let (store, owner) = try await team(kind)
        let now = Date()
        let (first, _, firstDigest) = Invitation.make(to: "a@team.test", as: .viewer, in: owner.accountID, by: owner.email, at: now)
        try await store.createInvitation(first, digest: firstDigest, audit: .system)
        let (second, _, secondDigest) = Invitation.make(to: "a@team.test", as: .developer, in: owner.accountID, by: owner.email, at: now)
        try await store.createInvitation(second, digest: secondDigest, audit: .system)
        #expect(try await store.invitation(digest: firstDigest) == nil, "a new invitation revokes the last one to the same email")
        let replaced = try await store.auditEntries(for: owner.accountID, matching: AuditQuery(event: .invitationRevoked))
        #expect(replaced.map(\.resourceID) == [first.id.rawValue], "and says so in the audit log")
        #expect(try await store.openInvitations(of: owner.accountID).map(\.id) == [second.id])
        await #expect(throws: KeywayError.invitationNotValid()) {
            try await store.acceptInvitation(
                digest: secondDigest,
                as: .newMember(passwordHash: "h"),
                at: now.addingTimeInterval(Invitation.lifetime),
                audit: .system
            )
        }
        #expect(try await store.revokeInvitation(second.id, in: owner.accountID, audit: .system, at: now))
        #expect(try await store.revokeInvitation(second.id, in: owner.accountID, audit: .system, at: now) == false)
        await #expect(throws: KeywayError.invitationNotValid()) {
            try await store.acceptInvitation(digest: secondDigest, as: .newMember(passwordHash: "h"), at: now, audit: .system)
        }
        // A member already is not invited again.
        let (again, _, againDigest) = Invitation.make(to: owner.email, as: .viewer, in: owner.accountID, by: owner.email, at: now)
        await #expect(throws: KeywayError.alreadyAMember()) { try await store.createInvitation(again, digest: againDigest, audit: .system) }
    }

    @Test(arguments: StoreKind.allCases)
    func invitingOnePersonTwiceAtOnceLeavesOneOpenLink(kind: StoreKind) async throws {
        let (store, owner) = try await team(kind)
        for round in 0..<5 {
            let email = "twice\(round)@team.test"
            await withTaskGroup(of: Void.self) { group in
                for _ in 0..<3 {
                    group.addTask {
                        let (invitation, _, digest) = Invitation.make(to: email, as: .viewer, in: owner.accountID, by: owner.email, at: Date())
                        try? await store.createInvitation(invitation, digest: digest, audit: .system)
                    }
                }
            }
            #expect(try await store.openInvitations(of: owner.accountID).filter { $0.email == email }.count == 1, "round \(round)")
        }
    }

    @Test(arguments: StoreKind.allCases)
    func twoOwnersDemotingEachOtherAtOnceLeaveOneOwner(kind: StoreKind) async throws {
        for _ in 0..<5 {
            let (store, owner) = try await team(kind)
            let second = try await add("second@team.test", as: .owner, to: owner.accountID, in: store)
            async let first = (try? await store.setRole(.viewer, of: owner.id, in: owner.accountID, audit: .system, at: Date())) != nil
            async let other = (try? await store.setRole(.viewer, of: second.id, in: owner.accountID, audit: .system, at: Date())) != nil
            let results = await [first, other]
            #expect(results.filter { $0 }.count == 1, "one demotion succeeds, one is refused: \(results)")
            let owners = try await store.members(of: owner.accountID).filter { $0.role == .owner }
            #expect(owners.count == 1)
            // And the last owner can be neither demoted nor removed.
            let last = try #require(owners.first)
            await #expect(throws: KeywayError.lastOwner()) {
                try await store.setRole(.developer, of: last.id, in: owner.accountID, audit: .system, at: Date())
            }
            await #expect(throws: KeywayError.lastOwner()) {
                try await store.removeMember(last.id, from: owner.accountID, audit: .system, at: Date())
            }
        }
    }

    @Test(arguments: StoreKind.allCases)
    func anOwnerWhoIsRemovedOrDemotedTakesTheirOpenInvitationsWithThem(kind: StoreKind) async throws {
        let (store, owner) = try await team(kind)
        for removal in [false, true] {
            let second = try await add("second-\(removal)@team.test", as: .owner, to: owner.accountID, in: store)
            let (invitation, _, digest) = Invitation.make(
                to: "back-\(removal)@team.test",
                as: .owner,
                in: owner.accountID,
                by: second.email,
                at: Date()
            )
            try await store.createInvitation(invitation, digest: digest, audit: .system)
            if removal {
                #expect(try await store.removeMember(second.id, from: owner.accountID, audit: .system, at: Date()))
            } else {
                #expect(try await store.setRole(.developer, of: second.id, in: owner.accountID, audit: .system, at: Date())?.role == .developer)
            }
            await #expect(throws: KeywayError.invitationNotValid(), "removed: \(removal)") {
                try await store.acceptInvitation(digest: digest, as: .newMember(passwordHash: "h"), at: Date(), audit: .system)
            }
        }
        let revoked = try await store.auditEntries(for: owner.accountID, matching: AuditQuery(event: .invitationRevoked))
        #expect(revoked.count == 2)
    }

    /// Removing a person from their only account while they join another: either they join
    /// and stay, or the joining fails; never a membership that vanishes with its person.
    @Test(arguments: StoreKind.allCases)
    func aPersonJoiningElsewhereWhileRemovedIsNeverLeftHalfJoined(kind: StoreKind) async throws {
        let (store, owner) = try await team(kind)
        let (other, boss) = try await store.createAccount(name: "Other", ownerEmail: "boss@other.test", passwordHash: "h", at: Date(), audit: .system)
        for round in 0..<8 {
            let person = try await add("p\(round)@team.test", as: .developer, to: owner.accountID, in: store)
            let (invitation, _, digest) = Invitation.make(to: person.email, as: .viewer, in: other.id, by: boss.email, at: Date())
            try await store.createInvitation(invitation, digest: digest, audit: .system)
            async let removed = try store.removeMember(person.id, from: owner.accountID, audit: .system, at: Date())
            async let joined = try? await store.acceptInvitation(digest: digest, as: .existingMember(person.id), at: Date(), audit: .system)
            #expect(try await removed)
            if await joined != nil {
                #expect(try await store.member(person.id, in: other.id) != nil, "round \(round): joined, and still a member")
                #expect(try await store.memberCredentials(email: person.email) != nil, "round \(round): the person stays")
            } else {
                #expect(try await store.memberCredentials(email: person.email) == nil, "round \(round): refused, and gone")
            }
        }
    }

    @Test(arguments: StoreKind.allCases)
    func removingAMemberEndsTheirSessionsThereAndFreesALoneEmail(kind: StoreKind) async throws {
        let (store, owner) = try await team(kind)
        let developer = try await add("dev@team.test", as: .developer, to: owner.accountID, in: store)
        let now = Date()
        let session = DashboardSession.fresh(of: developer, at: now)
        try await store.createSession(session, audit: .member(.signedIn, developer, at: now, context: .system))
        #expect(try await store.session(digest: session.digest, at: now) != nil)
        #expect(try await store.removeMember(developer.id, from: owner.accountID, audit: .system, at: now))
        #expect(try await store.session(digest: session.digest, at: now) == nil, "the session ended with the membership")
        #expect(try await store.member(developer.id, in: owner.accountID) == nil)
        #expect(try await store.memberCredentials(email: "dev@team.test") == nil, "in no account: the person is gone")
        #expect(try await store.removeMember(developer.id, from: owner.accountID, audit: .system, at: now) == false)
    }

    @Test(arguments: StoreKind.allCases)
    func aPersonInTwoAccountsSwitchesSessionsOnlyBetweenThem(kind: StoreKind) async throws {
        let (store, owner) = try await team(kind)
        let (other, boss) = try await store.createAccount(name: "Other", ownerEmail: "boss@other.test", passwordHash: "h", at: Date(), audit: .system)
        let (invitation, _, digest) = Invitation.make(to: owner.email, as: .viewer, in: other.id, by: boss.email, at: Date())
        try await store.createInvitation(invitation, digest: digest, audit: .system)
        await #expect(throws: KeywayError.emailTaken()) {
            try await store.acceptInvitation(digest: digest, as: .newMember(passwordHash: "h"), at: Date(), audit: .system)
        }
        let joined = try await store.acceptInvitation(digest: digest, as: .existingMember(owner.id), at: Date(), audit: .system)
        #expect(joined.id == owner.id && joined.accountID == other.id && joined.role == .viewer)
        #expect(try await store.memberships(of: owner.id).map(\.accountID) == [owner.accountID, other.id])
        #expect(try await store.memberCredentials(email: owner.email)?.member.accountID == owner.accountID, "signs in to the first")

        let now = Date()
        let session = DashboardSession.fresh(of: owner, at: now)
        try await store.createSession(session, audit: .member(.signedIn, owner, at: now, context: .system))
        #expect(try await store.switchSession(digest: session.digest, to: other.id, csrfToken: "after"))
        let switched = try await store.session(digest: session.digest, at: now)
        #expect(switched?.accountID == other.id)
        #expect(switched?.csrfToken == "after", "forms made for the previous account stop working")
        let stranger = try await store.createAccount(name: "Stranger", at: Date())
        #expect(try await store.switchSession(digest: session.digest, to: stranger.id, csrfToken: "x") == false)
        #expect(try await store.session(digest: session.digest, at: now)?.accountID == other.id)

        try await store.setPolicy(AccountPolicy(developersManageProductionKeys: true), of: other.id, audit: .system, at: now)
        #expect(try await store.account(other.id)?.policy.developersManageProductionKeys == true)
        #expect(try await store.account(owner.accountID)?.policy.developersManageProductionKeys == false)
    }
}
