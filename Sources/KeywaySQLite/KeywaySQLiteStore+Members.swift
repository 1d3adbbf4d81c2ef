public import Foundation
import GRDB
public import KeywayCore

/// Accounts, the dashboard members who own them, and members' sign-in sessions.
extension KeywaySQLiteStore {
    // MARK: Accounts

    public func createAccount(name: String, at date: Date) async throws -> Account {
        let account = Account(id: .generate(), name: name, createdAt: date.keywayPrecision)
        try await database.write { db in try Self.insert(account, db: db) }
        return account
    }

    /// Inserts an account and its two environments.
    static func insert(_ account: Account, db: Database) throws {
        try db.execute(
            sql: "INSERT INTO accounts (id, name, created_at) VALUES (?, ?, ?)",
            arguments: [account.id.rawValue, account.name, account.createdAt.keywayMilliseconds]
        )
        for environment in Environment.allCases {
            try db.execute(
                sql: "INSERT INTO environments (account_id, name, created_at) VALUES (?, ?, ?)",
                arguments: [account.id.rawValue, environment.rawValue, account.createdAt.keywayMilliseconds]
            )
        }
    }

    public func account(_ id: AccountID) async throws -> Account? {
        try await database.read { db in
            try Row.fetchOne(db, sql: "SELECT * FROM accounts WHERE id = ?", arguments: [id.rawValue]).map(Account.init(row:))
        }
    }

    public func accounts() async throws -> [Account] {
        try await database.read { db in
            try Row.fetchAll(db, sql: "SELECT * FROM accounts ORDER BY created_at, id").map(Account.init(row:))
        }
    }

    // MARK: Dashboard members and sessions

    /// A person's membership rows, read as ``Member`` values.
    static let memberColumns = "m.id, ms.account_id, m.email, ms.role, ms.created_at, m.totp_sealed_secret IS NOT NULL AS has_two_factor"

    public func createAccount(
        name: String,
        ownerEmail: String,
        passwordHash: String,
        at date: Date,
        audit: AuditContext
    ) async throws -> (
        Account, Member
    ) {
        let account = Account(id: .generate(), name: name, createdAt: date.keywayPrecision)
        let owner = Member(id: .generate(), accountID: account.id, email: ownerEmail, role: .owner, createdAt: account.createdAt)
        try await database.write { db in
            guard try Bool.fetchOne(db, sql: "SELECT 1 FROM members WHERE email = ?", arguments: [ownerEmail]) == nil else {
                throw KeywayError.emailTaken()
            }
            try Self.insert(account, db: db)
            try db.execute(
                sql: "INSERT INTO members (id, email, password_hash, created_at) VALUES (?, ?, ?, ?)",
                arguments: [owner.id.rawValue, owner.email, passwordHash, owner.createdAt.keywayMilliseconds]
            )
            try Self.insertMembership(owner, db: db)
            try Self.insert([.member(.signedUp, owner, at: account.createdAt, context: audit)], db: db)
        }
        return (account, owner)
    }

    static func insertMembership(_ member: Member, db: Database) throws {
        try db.execute(
            sql: "INSERT INTO memberships (account_id, member_id, role, created_at) VALUES (?, ?, ?, ?)",
            arguments: [member.accountID.rawValue, member.id.rawValue, member.role.rawValue, member.createdAt.keywayMilliseconds]
        )
    }

    public func memberCredentials(email: String) async throws -> (member: Member, passwordHash: String)? {
        try await database.read { db in
            try Row.fetchOne(
                db,
                sql: """
                    SELECT \(Self.memberColumns), m.password_hash FROM members m JOIN memberships ms ON ms.member_id = m.id
                    WHERE m.email = ? ORDER BY ms.created_at, ms.account_id LIMIT 1
                    """,
                arguments: [email]
            ).map { row in (Member(row: row), row["password_hash"] as String) }
        }
    }

    public func member(_ id: MemberID, in accountID: AccountID) async throws -> Member? {
        try await database.read { db in try Self.member(id, in: accountID, db: db) }
    }

    static func member(_ id: MemberID, in accountID: AccountID, db: Database) throws -> Member? {
        try Row.fetchOne(
            db,
            sql: "SELECT \(memberColumns) FROM memberships ms JOIN members m ON m.id = ms.member_id WHERE ms.account_id = ? AND ms.member_id = ?",
            arguments: [accountID.rawValue, id.rawValue]
        ).map(Member.init(row:))
    }

    public func memberships(of id: MemberID) async throws -> [Member] {
        try await database.read { db in
            try Row.fetchAll(
                db,
                sql: """
                    SELECT \(Self.memberColumns) FROM memberships ms JOIN members m ON m.id = ms.member_id
                    WHERE ms.member_id = ? ORDER BY ms.created_at, ms.account_id
                    """,
                arguments: [id.rawValue]
            ).map(Member.init(row:))
        }
    }

    public func members(of accountID: AccountID) async throws -> [Member] {
        try await database.read { db in
            try Row.fetchAll(
                db,
                sql: """
                    SELECT \(Self.memberColumns) FROM memberships ms JOIN members m ON m.id = ms.member_id
                    WHERE ms.account_id = ? ORDER BY ms.role = 'owner' DESC, m.email
                    """,
                arguments: [accountID.rawValue]
            ).map(Member.init(row:))
        }
    }

    /// Throws `last_owner` when `member` is the account's only owner. SQLite has one writer,
    /// so the count and the change that follows it are one step.
    static func requireAnotherOwner(than member: Member, db: Database) throws {
        guard member.role == .owner else { return }
        let owners = try Int.fetchOne(
            db,
            sql: "SELECT count(*) FROM memberships WHERE account_id = ? AND role = 'owner'",
            arguments: [member.accountID.rawValue]
        )
        if owners ?? 0 <= 1 { throw KeywayError.lastOwner() }
    }

    public func setRole(_ role: MemberRole, of id: MemberID, in accountID: AccountID, audit: AuditContext, at date: Date) async throws -> Member? {
        try await database.write { db in
            guard var member = try Self.member(id, in: accountID, db: db) else { return nil }
            guard member.role != role else { return member }
            if role != .owner { try Self.requireAnotherOwner(than: member, db: db) }
            let previous = member.role
            try db.execute(
                sql: "UPDATE memberships SET role = ? WHERE account_id = ? AND member_id = ?",
                arguments: [role.rawValue, accountID.rawValue, id.rawValue]
            )
            member.role = role
            try Self.insert(
                [.member(.roleChanged, member, at: date.keywayPrecision, context: audit, details: ["from": previous.rawValue, "to": role.rawValue])],
                db: db
            )
            if !role.may(.manageMembers, under: AccountPolicy()) { try Self.revokeInvitations(by: member, at: date, audit: audit, db: db) }
            return member
        }
    }

    public func removeMember(_ id: MemberID, from accountID: AccountID, audit: AuditContext, at date: Date) async throws -> Bool {
        try await database.write { db in
            guard let member = try Self.member(id, in: accountID, db: db) else { return false }
            try Self.requireAnotherOwner(than: member, db: db)
            // Sessions in this account end by cascade.
            try db.execute(
                sql: "DELETE FROM memberships WHERE account_id = ? AND member_id = ?",
                arguments: [accountID.rawValue, id.rawValue]
            )
            try db.execute(
                sql: "DELETE FROM members WHERE id = ? AND NOT EXISTS (SELECT 1 FROM memberships WHERE member_id = ?)",
                arguments: [id.rawValue, id.rawValue]
            )
            try Self.insert([.member(.memberRemoved, member, at: date.keywayPrecision, context: audit)], db: db)
            try Self.revokeInvitations(by: member, at: date, audit: audit, db: db)
            return true
        }
    }

    public func setPolicy(_ policy: AccountPolicy, of accountID: AccountID, audit: AuditContext, at date: Date) async throws {
        try await database.write { db in
            try db.execute(
                sql: "UPDATE accounts SET developers_manage_production_keys = ?, require_two_factor = ? WHERE id = ?",
                arguments: [policy.developersManageProductionKeys, policy.requireTwoFactor, accountID.rawValue]
            )
            guard db.changesCount > 0 else { throw KeywayError(.accountNotFound, "No account \(accountID).") }
            try Self.insert([.accountPolicy(policy, of: accountID, at: date.keywayPrecision, context: audit)], db: db)
        }
    }

    // MARK: Invitations

    /// Revokes the open invitations `member` sent in their account: a link keeps no more
    /// authority than the person who made it, so one who is removed, or may no longer invite,
    /// cannot come back through a link they sent themselves.
    static func revokeInvitations(by member: Member, at date: Date, audit: AuditContext, db: Database) throws {
        let open = try Row.fetchAll(
            db,
            sql: "SELECT * FROM invitations WHERE account_id = ? AND invited_by = ? AND accepted_at IS NULL AND revoked_at IS NULL",
            arguments: [member.accountID.rawValue, member.email]
        ).map(Invitation.init(row:))
        for invitation in open {
            try db.execute(sql: "UPDATE invitations SET revoked_at = ? WHERE id = ?", arguments: [date.keywayMilliseconds, invitation.id.rawValue])
        }
        try insert(open.map { .invitation(.invitationRevoked, $0, at: date.keywayPrecision, context: audit) }, db: db)
    }

    public func createInvitation(_ invitation: Invitation, digest: KeyDigest, audit: AuditContext) async throws {
        try await database.write { db in
            let isMember = try Bool.fetchOne(
                db,
                sql: "SELECT 1 FROM memberships ms JOIN members m ON m.id = ms.member_id WHERE ms.account_id = ? AND m.email = ?",
                arguments: [invitation.accountID.rawValue, invitation.email]
            )
            if isMember != nil { throw KeywayError.alreadyAMember() }
            // One open link per person and account: a new invitation replaces the last, on the record.
            let replaced = try Row.fetchAll(
                db,
                sql: "SELECT * FROM invitations WHERE account_id = ? AND email = ? AND accepted_at IS NULL AND revoked_at IS NULL",
                arguments: [invitation.accountID.rawValue, invitation.email]
            ).map(Invitation.init(row:))
            for old in replaced {
                try db.execute(
                    sql: "UPDATE invitations SET revoked_at = ? WHERE id = ?",
                    arguments: [invitation.createdAt.keywayMilliseconds, old.id.rawValue]
                )
            }
            try Self.insert(replaced.map { .invitation(.invitationRevoked, $0, at: invitation.createdAt, context: audit) }, db: db)
            try db.execute(
                sql: """
                    INSERT INTO invitations (id, digest, account_id, email, role, invited_by, created_at, expires_at)
                    VALUES (?, ?, ?, ?, ?, ?, ?, ?)
                    """,
                arguments: [
                    invitation.id.rawValue, Data(digest.bytes), invitation.accountID.rawValue, invitation.email, invitation.role.rawValue,
                    invitation.invitedBy, invitation.createdAt.keywayMilliseconds, invitation.expiresAt.keywayMilliseconds,
                ]
            )
            try Self.insert([.invitation(.memberInvited, invitation, at: invitation.createdAt, context: audit)], db: db)
        }
    }

    public func invitation(digest: KeyDigest) async throws -> Invitation? {
        try await database.read { db in
            try Row.fetchOne(db, sql: "SELECT * FROM invitations WHERE digest = ? AND revoked_at IS NULL", arguments: [Data(digest.bytes)])
                .map(Invitation.init(row:))
        }
    }

    public func openInvitations(of accountID: AccountID) async throws -> [Invitation] {
        try await database.read { db in
            try Row.fetchAll(
                db,
                sql: """
                    SELECT * FROM invitations WHERE account_id = ? AND accepted_at IS NULL AND revoked_at IS NULL
                    ORDER BY created_at DESC, id
                    """,
                arguments: [accountID.rawValue]
            ).map(Invitation.init(row:))
        }
    }

    public func revokeInvitation(_ id: InvitationID, in accountID: AccountID, audit: AuditContext, at date: Date) async throws -> Bool {
        try await database.write { db in
            guard
                let invitation = try Row.fetchOne(
                    db,
                    sql: "SELECT * FROM invitations WHERE id = ? AND account_id = ? AND accepted_at IS NULL AND revoked_at IS NULL",
                    arguments: [id.rawValue, accountID.rawValue]
                ).map(Invitation.init(row:))
            else { return false }
            try db.execute(sql: "UPDATE invitations SET revoked_at = ? WHERE id = ?", arguments: [date.keywayMilliseconds, id.rawValue])
            try Self.insert([.invitation(.invitationRevoked, invitation, at: date.keywayPrecision, context: audit)], db: db)
            return true
        }
    }

    public func acceptInvitation(digest: KeyDigest, as acceptance: InvitationAcceptance, at date: Date, audit: AuditContext) async throws -> Member {
        let now = date.keywayPrecision
        return try await database.write { db in
            guard
                let invitation = try Row.fetchOne(
                    db,
                    sql: "SELECT * FROM invitations WHERE digest = ? AND revoked_at IS NULL",
                    arguments: [Data(digest.bytes)]
                ).map(Invitation.init(row:)),
                invitation.isOpen(at: now)
            else { throw KeywayError.invitationNotValid() }
            let memberID: MemberID
            var email = invitation.email
            switch acceptance {
            case .newMember(let passwordHash):
                guard try Bool.fetchOne(db, sql: "SELECT 1 FROM members WHERE email = ?", arguments: [invitation.email]) == nil else {
                    throw KeywayError.emailTaken()
                }
                memberID = .generate()
                try db.execute(
                    sql: "INSERT INTO members (id, email, password_hash, created_at) VALUES (?, ?, ?, ?)",
                    arguments: [memberID.rawValue, invitation.email, passwordHash, now.keywayMilliseconds]
                )
            case .existingMember(let id):
                guard let existing = try String.fetchOne(db, sql: "SELECT email FROM members WHERE id = ?", arguments: [id.rawValue]) else {
                    throw KeywayError.memberNotFound()
                }
                if try Self.member(id, in: invitation.accountID, db: db) != nil { throw KeywayError.alreadyAMember() }
                memberID = id
                email = existing
            }
            try db.execute(sql: "UPDATE invitations SET accepted_at = ? WHERE id = ?", arguments: [now.keywayMilliseconds, invitation.id.rawValue])
            let member = Member(id: memberID, accountID: invitation.accountID, email: email, role: invitation.role, createdAt: now)
            try Self.insertMembership(member, db: db)
            try Self.insert([.member(.memberJoined, member, at: now, context: audit, details: ["role": member.role.rawValue])], db: db)
            return member
        }
    }

    public func passwordHash(of id: MemberID) async throws -> String? {
        try await database.read { db in
            try String.fetchOne(db, sql: "SELECT password_hash FROM members WHERE id = ?", arguments: [id.rawValue])
        }
    }

    public func changePassword(of id: MemberID, to passwordHash: String, audit: AuditEntry) async throws {
        try await database.write { db in
            try db.execute(sql: "UPDATE members SET password_hash = ? WHERE id = ?", arguments: [passwordHash, id.rawValue])
            try db.execute(sql: "DELETE FROM sessions WHERE member_id = ?", arguments: [id.rawValue])
            try Self.insert([audit], db: db)
        }
    }

    public func createSession(_ session: DashboardSession, audit: AuditEntry?) async throws {
        try await database.write { db in
            // A session waiting for its second factor is no sign-in yet: its entry comes then.
            if let audit { try Self.insert([audit], db: db) }
            try db.execute(
                sql: """
                    INSERT INTO sessions (digest, member_id, account_id, second_factor_pending, csrf_token, created_at, expires_at)
                    VALUES (?, ?, ?, ?, ?, ?, ?)
                    """,
                arguments: [
                    Data(session.digest.bytes), session.memberID.rawValue, session.accountID.rawValue, session.secondFactorPending,
                    session.csrfToken, session.createdAt.keywayMilliseconds, session.expiresAt.keywayMilliseconds,
                ]
            )
        }
    }

    public func session(digest: KeyDigest, at date: Date) async throws -> DashboardSession? {
        try await database.read { db in
            try Row.fetchOne(
                db,
                sql: "SELECT * FROM sessions WHERE digest = ? AND expires_at > ?",
                arguments: [Data(digest.bytes), date.keywayMilliseconds]
            ).map { row in
                DashboardSession(
                    digest: try row.digest("digest"),
                    memberID: MemberID(rawValue: row["member_id"]),
                    accountID: AccountID(rawValue: row["account_id"]),
                    secondFactorPending: row["second_factor_pending"],
                    csrfToken: row["csrf_token"],
                    createdAt: Date(keywayMilliseconds: row["created_at"]),
                    expiresAt: Date(keywayMilliseconds: row["expires_at"])
                )
            }
        }
    }

    public func switchSession(digest: KeyDigest, to accountID: AccountID, csrfToken: String) async throws -> Bool {
        try await database.write { db in
            try db.execute(
                sql: """
                    UPDATE sessions SET account_id = ?, csrf_token = ?
                    WHERE digest = ? AND EXISTS (SELECT 1 FROM memberships WHERE account_id = ? AND member_id = sessions.member_id)
                    """,
                arguments: [accountID.rawValue, csrfToken, Data(digest.bytes), accountID.rawValue]
            )
            return db.changesCount > 0
        }
    }

    public func deleteSession(digest: KeyDigest, audit: AuditEntry) async throws {
        try await database.write { db in
            try db.execute(sql: "DELETE FROM sessions WHERE digest = ?", arguments: [Data(digest.bytes)])
            // A session already ended (another tab, a password change) was no sign-out.
            if db.changesCount > 0 { try Self.insert([audit], db: db) }
        }
    }

    public func deleteExpiredSessions(before date: Date) async throws {
        try await database.write { db in
            try db.execute(sql: "DELETE FROM sessions WHERE expires_at <= ?", arguments: [date.keywayMilliseconds])
        }
    }
}
