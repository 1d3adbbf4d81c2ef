public import Foundation
public import KeywayCore
import Logging
import PostgresNIO

/// Accounts, the dashboard members who own them, and members' sign-in sessions.
extension KeywayPostgresStore {
    // MARK: Accounts

    public func createAccount(name: String, at date: Date) async throws -> Account {
        let account = Account(id: .generate(), name: name, createdAt: date.keywayPrecision)
        try await transaction { connection in
            try await Self.insert(account, on: connection, logger: logger)
        }
        return account
    }

    static func insert(_ account: Account, on connection: PostgresConnection, logger: Logger) async throws {
        let created = account.createdAt.keywayMilliseconds
        try await connection.query(
            "INSERT INTO accounts (id, name, created_at) VALUES (\(account.id.rawValue), \(account.name), \(created))",
            logger: logger
        )
        for environment in Environment.allCases {
            try await connection.query(
                "INSERT INTO environments (account_id, name, created_at) VALUES (\(account.id.rawValue), \(environment.rawValue), \(created))",
                logger: logger
            )
        }
    }

    public func account(_ id: AccountID) async throws -> Account? {
        try await first(
            "SELECT id, name, created_at, developers_manage_production_keys, require_two_factor FROM accounts WHERE id = \(id.rawValue)",
            as: (String, String, Int64, Bool, Bool).self
        ).map(Account.init(row:))
    }

    public func accounts() async throws -> [Account] {
        try await all(
            "SELECT id, name, created_at, developers_manage_production_keys, require_two_factor FROM accounts ORDER BY created_at, id",
            as: (String, String, Int64, Bool, Bool).self
        )
        .map(Account.init(row:))
    }

    // MARK: Dashboard members and sessions

    /// A person's membership rows, read as ``MemberRow``.
    static let memberColumns = "m.id, ms.account_id, m.email, ms.role, ms.created_at, m.totp_sealed_secret IS NOT NULL"

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
        do {
            try await transaction { connection in
                try await Self.insert(account, on: connection, logger: logger)
                try await connection.query(
                    """
                    INSERT INTO members (id, email, password_hash, created_at)
                    VALUES (\(owner.id.rawValue), \(owner.email), \(passwordHash), \(owner.createdAt.keywayMilliseconds))
                    """,
                    logger: logger
                )
                try await Self.insertMembership(owner, on: connection, logger: logger)
                try await Self.insert([.member(.signedUp, owner, at: account.createdAt, context: audit)], connection: connection, logger: logger)
            }
        } catch let error as PSQLError where error.serverInfo?[.sqlState] == "23505" {
            throw KeywayError.emailTaken()
        }
        return (account, owner)
    }

    static func insertMembership(_ member: Member, on connection: PostgresConnection, logger: Logger) async throws {
        try await connection.query(
            """
            INSERT INTO memberships (account_id, member_id, role, created_at)
            VALUES (\(member.accountID.rawValue), \(member.id.rawValue), \(member.role.rawValue), \(member.createdAt.keywayMilliseconds))
            """,
            logger: logger
        )
    }

    /// The first row of `query` on a connection (inside a transaction).
    static func first<each Column: PostgresDecodable & Sendable>(
        _ query: PostgresQuery,
        as type: (repeat each Column).Type,
        on connection: PostgresConnection,
        logger: Logger
    ) async throws -> (repeat each Column)? {
        for try await row in try await connection.query(query, logger: logger).decode((repeat each Column).self) { return row }
        return nil
    }

    public func memberCredentials(email: String) async throws -> (member: Member, passwordHash: String)? {
        try await first(
            """
            SELECT \(unescaped: Self.memberColumns), m.password_hash FROM members m JOIN memberships ms ON ms.member_id = m.id
            WHERE m.email = \(email) ORDER BY ms.created_at, ms.account_id LIMIT 1
            """,
            as: (String, String, String, String, Int64, Bool, String).self
        ).map { row in (Member(row: (row.0, row.1, row.2, row.3, row.4, row.5)), row.6) }
    }

    public func member(_ id: MemberID, in accountID: AccountID) async throws -> Member? {
        try await first(Self.memberQuery(id, in: accountID, locking: false), as: MemberRow.self).map(Member.init(row:))
    }

    static func memberQuery(_ id: MemberID, in accountID: AccountID, locking: Bool) -> PostgresQuery {
        """
        SELECT \(unescaped: memberColumns) FROM memberships ms JOIN members m ON m.id = ms.member_id
        WHERE ms.account_id = \(accountID.rawValue) AND ms.member_id = \(id.rawValue)\(unescaped: locking ? " FOR UPDATE OF ms" : "")
        """
    }

    public func memberships(of id: MemberID) async throws -> [Member] {
        try await all(
            """
            SELECT \(unescaped: Self.memberColumns) FROM memberships ms JOIN members m ON m.id = ms.member_id
            WHERE ms.member_id = \(id.rawValue) ORDER BY ms.created_at, ms.account_id
            """,
            as: MemberRow.self
        ).map(Member.init(row:))
    }

    public func members(of accountID: AccountID) async throws -> [Member] {
        try await all(
            """
            SELECT \(unescaped: Self.memberColumns) FROM memberships ms JOIN members m ON m.id = ms.member_id
            WHERE ms.account_id = \(accountID.rawValue) ORDER BY ms.role = 'owner' DESC, m.email
            """,
            as: MemberRow.self
        ).map(Member.init(row:))
    }

    /// Locks the account's owner rows and the member's, then throws `last_owner` when the
    /// member is the only owner. Two owners demoting each other at once both lock every
    /// owner row: the second waits, re-reads, finds one owner left and is refused.
    static func lockedMember(
        _ id: MemberID,
        in accountID: AccountID,
        requiringAnotherOwner: Bool,
        on connection: PostgresConnection,
        logger: Logger
    ) async throws -> Member? {
        var owners = 0
        let rows = try await connection.query(
            "SELECT member_id FROM memberships WHERE account_id = \(accountID.rawValue) AND role = 'owner' FOR UPDATE",
            logger: logger
        ).decode(String.self)
        for try await _ in rows { owners += 1 }
        guard let row = try await first(memberQuery(id, in: accountID, locking: true), as: MemberRow.self, on: connection, logger: logger)
        else { return nil }
        let member = Member(row: row)
        if requiringAnotherOwner, member.role == .owner, owners <= 1 { throw KeywayError.lastOwner() }
        return member
    }

    public func setRole(_ role: MemberRole, of id: MemberID, in accountID: AccountID, audit: AuditContext, at date: Date) async throws -> Member? {
        try await transaction { connection in
            guard
                var member = try await Self.lockedMember(
                    id,
                    in: accountID,
                    requiringAnotherOwner: role != .owner,
                    on: connection,
                    logger: logger
                )
            else { return nil }
            guard member.role != role else { return member }
            let previous = member.role
            try await connection.query(
                """
                UPDATE memberships SET role = \(role.rawValue) WHERE account_id = \(accountID.rawValue) AND member_id = \(id.rawValue)
                """,
                logger: logger
            )
            member.role = role
            try await Self.insert(
                [.member(.roleChanged, member, at: date.keywayPrecision, context: audit, details: ["from": previous.rawValue, "to": role.rawValue])],
                connection: connection,
                logger: logger
            )
            if !role.may(.manageMembers, under: AccountPolicy()) {
                try await Self.revokeInvitations(by: member, at: date, audit: audit, on: connection, logger: logger)
            }
            return member
        }
    }

    public func removeMember(_ id: MemberID, from accountID: AccountID, audit: AuditContext, at date: Date) async throws -> Bool {
        try await transaction { connection in
            // The person's row first: an acceptance of another invitation holds it `FOR SHARE` until
            // it commits, so the "left in no account" delete below sees that membership, and an
            // acceptance after this waits and then finds the person gone, never joining a deleted one.
            _ = try await Self.first("SELECT 1 FROM members WHERE id = \(id.rawValue) FOR UPDATE", as: (Int32).self, on: connection, logger: logger)
            guard
                let member = try await Self.lockedMember(id, in: accountID, requiringAnotherOwner: true, on: connection, logger: logger)
            else { return false }
            // Sessions in this account end by cascade.
            try await connection.query(
                "DELETE FROM memberships WHERE account_id = \(accountID.rawValue) AND member_id = \(id.rawValue)",
                logger: logger
            )
            try await connection.query(
                """
                DELETE FROM members WHERE id = \(id.rawValue) AND NOT EXISTS (SELECT 1 FROM memberships WHERE member_id = \(id.rawValue))
                """,
                logger: logger
            )
            try await Self.insert([.member(.memberRemoved, member, at: date.keywayPrecision, context: audit)], connection: connection, logger: logger)
            try await Self.revokeInvitations(by: member, at: date, audit: audit, on: connection, logger: logger)
            return true
        }
    }

    public func setPolicy(_ policy: AccountPolicy, of accountID: AccountID, audit: AuditContext, at date: Date) async throws {
        try await transaction { connection in
            let updated = try await Self.first(
                """
                UPDATE accounts SET developers_manage_production_keys = \(policy.developersManageProductionKeys),
                                    require_two_factor = \(policy.requireTwoFactor)
                WHERE id = \(accountID.rawValue) RETURNING 1
                """,
                as: (Int32).self,
                on: connection,
                logger: logger
            )
            guard updated != nil else { throw KeywayError(.accountNotFound, "No account \(accountID).") }
            try await Self.insert(
                [.accountPolicy(policy, of: accountID, at: date.keywayPrecision, context: audit)],
                connection: connection,
                logger: logger
            )
        }
    }

    // MARK: Invitations

    typealias InvitationRow = (String, String, String, String, String, Int64, Int64, Int64?)
    static let invitationColumns = "id, account_id, email, role, invited_by, created_at, expires_at, accepted_at"

    /// Revokes the open invitations `member` sent in their account: a link keeps no more
    /// authority than the person who made it, so one who is removed, or may no longer invite,
    /// cannot come back through a link they sent themselves.
    static func revokeInvitations(
        by member: Member,
        at date: Date,
        audit: AuditContext,
        on connection: PostgresConnection,
        logger: Logger
    )
        async throws
    {
        var revoked: [Invitation] = []
        let rows = try await connection.query(
            """
            UPDATE invitations SET revoked_at = \(date.keywayMilliseconds)
            WHERE account_id = \(member.accountID.rawValue) AND invited_by = \(member.email) AND accepted_at IS NULL AND revoked_at IS NULL
            RETURNING \(unescaped: invitationColumns)
            """,
            logger: logger
        ).decode(InvitationRow.self)
        for try await row in rows { revoked.append(Invitation(row: row)) }
        try await insert(
            revoked.map { .invitation(.invitationRevoked, $0, at: date.keywayPrecision, context: audit) },
            connection: connection,
            logger: logger
        )
    }

    public func createInvitation(_ invitation: Invitation, digest: KeyDigest, audit: AuditContext) async throws {
        try await transaction { connection in
            // Two invitations of one person to one account at once take turns, so the second
            // revokes the first: one open link each, as on SQLite.
            try await connection.query(
                "SELECT pg_advisory_xact_lock(hashtextextended(\(invitation.accountID.rawValue + " " + invitation.email), 0))",
                logger: logger
            )
            let isMember = try await Self.first(
                """
                SELECT 1 FROM memberships ms JOIN members m ON m.id = ms.member_id
                WHERE ms.account_id = \(invitation.accountID.rawValue) AND m.email = \(invitation.email)
                """,
                as: (Int32).self,
                on: connection,
                logger: logger
            )
            if isMember != nil { throw KeywayError.alreadyAMember() }
            // One open link per person and account: a new invitation replaces the last, on the record.
            var replaced: [Invitation] = []
            let rows = try await connection.query(
                """
                UPDATE invitations SET revoked_at = \(invitation.createdAt.keywayMilliseconds)
                WHERE account_id = \(invitation.accountID.rawValue) AND email = \(invitation.email)
                  AND accepted_at IS NULL AND revoked_at IS NULL
                RETURNING \(unescaped: Self.invitationColumns)
                """,
                logger: logger
            ).decode(InvitationRow.self)
            for try await row in rows { replaced.append(Invitation(row: row)) }
            try await connection.query(
                """
                INSERT INTO invitations (id, digest, account_id, email, role, invited_by, created_at, expires_at)
                VALUES (\(invitation.id.rawValue), \(Data(digest.bytes)), \(invitation.accountID.rawValue), \(invitation.email),
                        \(invitation.role.rawValue), \(invitation.invitedBy), \(invitation.createdAt.keywayMilliseconds),
                        \(invitation.expiresAt.keywayMilliseconds))
                """,
                logger: logger
            )
            try await Self.insert(
                replaced.map { .invitation(.invitationRevoked, $0, at: invitation.createdAt, context: audit) }
                    + [.invitation(.memberInvited, invitation, at: invitation.createdAt, context: audit)],
                connection: connection,
                logger: logger
            )
        }
    }

    public func invitation(digest: KeyDigest) async throws -> Invitation? {
        try await first(
            """
            SELECT \(unescaped: Self.invitationColumns) FROM invitations WHERE digest = \(Data(digest.bytes)) AND revoked_at IS NULL
            """,
            as: InvitationRow.self
        ).map(Invitation.init(row:))
    }

    public func openInvitations(of accountID: AccountID) async throws -> [Invitation] {
        try await all(
            """
            SELECT \(unescaped: Self.invitationColumns) FROM invitations
            WHERE account_id = \(accountID.rawValue) AND accepted_at IS NULL AND revoked_at IS NULL
            ORDER BY created_at DESC, id
            """,
            as: InvitationRow.self
        ).map(Invitation.init(row:))
    }

    public func revokeInvitation(_ id: InvitationID, in accountID: AccountID, audit: AuditContext, at date: Date) async throws -> Bool {
        try await transaction { connection in
            guard
                let row = try await Self.first(
                    """
                    UPDATE invitations SET revoked_at = \(date.keywayMilliseconds)
                    WHERE id = \(id.rawValue) AND account_id = \(accountID.rawValue) AND accepted_at IS NULL AND revoked_at IS NULL
                    RETURNING \(unescaped: Self.invitationColumns)
                    """,
                    as: InvitationRow.self,
                    on: connection,
                    logger: logger
                )
            else { return false }
            try await Self.insert(
                [.invitation(.invitationRevoked, Invitation(row: row), at: date.keywayPrecision, context: audit)],
                connection: connection,
                logger: logger
            )
            return true
        }
    }

    public func acceptInvitation(digest: KeyDigest, as acceptance: InvitationAcceptance, at date: Date, audit: AuditContext) async throws -> Member {
        let now = date.keywayPrecision
        do {
            return try await transaction { connection in
                // The mark is the check: of two acceptances at once, one updates the row.
                guard
                    let row = try await Self.first(
                        """
                        UPDATE invitations SET accepted_at = \(now.keywayMilliseconds)
                        WHERE digest = \(Data(digest.bytes)) AND accepted_at IS NULL AND revoked_at IS NULL
                          AND expires_at > \(now.keywayMilliseconds)
                        RETURNING \(unescaped: Self.invitationColumns)
                        """,
                        as: InvitationRow.self,
                        on: connection,
                        logger: logger
                    )
                else { throw KeywayError.invitationNotValid() }
                let invitation = Invitation(row: row)
                let memberID: MemberID
                var email = invitation.email
                switch acceptance {
                case .newMember(let passwordHash):
                    memberID = .generate()
                    // A taken email is a unique violation, mapped below.
                    try await connection.query(
                        """
                        INSERT INTO members (id, email, password_hash, created_at)
                        VALUES (\(memberID.rawValue), \(invitation.email), \(passwordHash), \(now.keywayMilliseconds))
                        """,
                        logger: logger
                    )
                case .existingMember(let id):
                    guard
                        let existing = try await Self.first(
                            "SELECT email FROM members WHERE id = \(id.rawValue) FOR SHARE",
                            as: (String).self,
                            on: connection,
                            logger: logger
                        )
                    else { throw KeywayError.memberNotFound() }
                    if try await Self.first(
                        Self.memberQuery(id, in: invitation.accountID, locking: false),
                        as: MemberRow.self,
                        on: connection,
                        logger: logger
                    )
                        != nil
                    {
                        throw KeywayError.alreadyAMember()
                    }
                    memberID = id
                    email = existing
                }
                let member = Member(id: memberID, accountID: invitation.accountID, email: email, role: invitation.role, createdAt: now)
                try await Self.insertMembership(member, on: connection, logger: logger)
                try await Self.insert(
                    [.member(.memberJoined, member, at: now, context: audit, details: ["role": member.role.rawValue])],
                    connection: connection,
                    logger: logger
                )
                return member
            }
        } catch let error as PSQLError where error.serverInfo?[.sqlState] == "23505" {
            // The email was taken, or the membership made, by a concurrent transaction.
            if case .newMember = acceptance { throw KeywayError.emailTaken() }
            throw KeywayError.alreadyAMember()
        } catch let error as PSQLError where error.serverInfo?[.sqlState] == "23503" {
            // The account went while the membership was being made.
            throw KeywayError.invitationNotValid()
        }
    }

    public func passwordHash(of id: MemberID) async throws -> String? {
        try await first("SELECT password_hash FROM members WHERE id = \(id.rawValue)", as: String.self)
    }

    public func changePassword(of id: MemberID, to passwordHash: String, audit: AuditEntry) async throws {
        try await transaction { connection in
            try await connection.query("UPDATE members SET password_hash = \(passwordHash) WHERE id = \(id.rawValue)", logger: logger)
            try await connection.query("DELETE FROM sessions WHERE member_id = \(id.rawValue)", logger: logger)
            try await Self.insert([audit], connection: connection, logger: logger)
        }
    }

    public func createSession(_ session: DashboardSession, audit: AuditEntry?) async throws {
        try await transaction { connection in
            try await connection.query(
                """
                INSERT INTO sessions (digest, member_id, account_id, second_factor_pending, csrf_token, created_at, expires_at)
                VALUES (\(Data(session.digest.bytes)), \(session.memberID.rawValue), \(session.accountID.rawValue),
                        \(session.secondFactorPending), \(session.csrfToken),
                        \(session.createdAt.keywayMilliseconds), \(session.expiresAt.keywayMilliseconds))
                """,
                logger: logger
            )
            // A session waiting for its second factor is no sign-in yet: its entry comes then.
            if let audit { try await Self.insert([audit], connection: connection, logger: logger) }
        }
    }

    public func session(digest: KeyDigest, at date: Date) async throws -> DashboardSession? {
        try await first(
            """
            SELECT digest, member_id, account_id, second_factor_pending, csrf_token, created_at, expires_at FROM sessions
            WHERE digest = \(Data(digest.bytes)) AND expires_at > \(date.keywayMilliseconds)
            """,
            as: (Data, String, String, Bool, String, Int64, Int64).self
        ).map { row in
            DashboardSession(
                digest: try Self.digest(row.0),
                memberID: MemberID(rawValue: row.1),
                accountID: AccountID(rawValue: row.2),
                secondFactorPending: row.3,
                csrfToken: row.4,
                createdAt: Date(keywayMilliseconds: row.5),
                expiresAt: Date(keywayMilliseconds: row.6)
            )
        }
    }

    public func switchSession(digest: KeyDigest, to accountID: AccountID, csrfToken: String) async throws -> Bool {
        do {
            return try await first(
                """
                UPDATE sessions SET account_id = \(accountID.rawValue), csrf_token = \(csrfToken)
                WHERE digest = \(Data(digest.bytes))
                  AND EXISTS (SELECT 1 FROM memberships WHERE account_id = \(accountID.rawValue) AND member_id = sessions.member_id)
                RETURNING 1
                """,
                as: Int32.self
            ) != nil
        } catch let error as PSQLError where error.serverInfo?[.sqlState] == "23503" {
            // The membership was removed between the check and the write.
            return false
        }
    }

    public func deleteSession(digest: KeyDigest, audit: AuditEntry) async throws {
        try await transaction { connection in
            let deleted = try await connection.query(
                "DELETE FROM sessions WHERE digest = \(Data(digest.bytes)) RETURNING 1",
                logger: logger
            ).decode(Int32.self)
            var found = false
            for try await _ in deleted { found = true }
            // A session already ended (another tab, a password change) was no sign-out.
            if found { try await Self.insert([audit], connection: connection, logger: logger) }
        }
    }

    public func deleteExpiredSessions(before date: Date) async throws {
        try await client.query("DELETE FROM sessions WHERE expires_at <= \(date.keywayMilliseconds)", logger: logger)
    }
}
