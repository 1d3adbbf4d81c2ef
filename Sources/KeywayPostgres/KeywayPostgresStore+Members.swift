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
            "SELECT id, name, created_at FROM accounts WHERE id = \(id.rawValue)",
            as: (String, String, Int64).self
        ).map(Account.init(row:))
    }

    public func accounts() async throws -> [Account] {
        try await all("SELECT id, name, created_at FROM accounts ORDER BY created_at, id", as: (String, String, Int64).self)
            .map(Account.init(row:))
    }

    // MARK: Dashboard members and sessions

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
                    INSERT INTO members (id, account_id, email, password_hash, role, created_at)
                    VALUES (\(owner.id.rawValue), \(account.id.rawValue), \(owner.email), \(passwordHash), \(owner.role.rawValue),
                            \(owner.createdAt.keywayMilliseconds))
                    """,
                    logger: logger
                )
                try await Self.insert([.member(.signedUp, owner, at: account.createdAt, context: audit)], connection: connection, logger: logger)
            }
        } catch let error as PSQLError where error.serverInfo?[.sqlState] == "23505" {
            throw KeywayError.emailTaken()
        }
        return (account, owner)
    }

    public func memberCredentials(email: String) async throws -> (member: Member, passwordHash: String)? {
        try await first(
            "SELECT id, account_id, email, role, created_at, password_hash FROM members WHERE email = \(email)",
            as: (String, String, String, String, Int64, String).self
        ).map { row in (Member(row: (row.0, row.1, row.2, row.3, row.4)), row.5) }
    }

    public func member(_ id: MemberID) async throws -> Member? {
        try await first("SELECT id, account_id, email, role, created_at FROM members WHERE id = \(id.rawValue)", as: MemberRow.self)
            .map(Member.init(row:))
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

    public func createSession(_ session: DashboardSession, audit: AuditEntry) async throws {
        try await transaction { connection in
            try await connection.query(
                """
                INSERT INTO sessions (digest, member_id, csrf_token, created_at, expires_at)
                VALUES (\(Data(session.digest.bytes)), \(session.memberID.rawValue), \(session.csrfToken),
                        \(session.createdAt.keywayMilliseconds), \(session.expiresAt.keywayMilliseconds))
                """,
                logger: logger
            )
            try await Self.insert([audit], connection: connection, logger: logger)
        }
    }

    public func session(digest: KeyDigest, at date: Date) async throws -> DashboardSession? {
        try await first(
            """
            SELECT digest, member_id, csrf_token, created_at, expires_at FROM sessions
            WHERE digest = \(Data(digest.bytes)) AND expires_at > \(date.keywayMilliseconds)
            """,
            as: (Data, String, String, Int64, Int64).self
        ).map { row in
            DashboardSession(
                digest: try Self.digest(row.0),
                memberID: MemberID(rawValue: row.1),
                csrfToken: row.2,
                createdAt: Date(keywayMilliseconds: row.3),
                expiresAt: Date(keywayMilliseconds: row.4)
            )
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
