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
                sql: "INSERT INTO members (id, account_id, email, password_hash, role, created_at) VALUES (?, ?, ?, ?, ?, ?)",
                arguments: [
                    owner.id.rawValue, account.id.rawValue, owner.email, passwordHash, owner.role.rawValue, owner.createdAt.keywayMilliseconds,
                ]
            )
            try Self.insert([.member(.signedUp, owner, at: account.createdAt, context: audit)], db: db)
        }
        return (account, owner)
    }

    public func memberCredentials(email: String) async throws -> (member: Member, passwordHash: String)? {
        try await database.read { db in
            try Row.fetchOne(db, sql: "SELECT * FROM members WHERE email = ?", arguments: [email]).map { row in
                (Member(row: row), row["password_hash"] as String)
            }
        }
    }

    public func member(_ id: MemberID) async throws -> Member? {
        try await database.read { db in
            try Row.fetchOne(db, sql: "SELECT * FROM members WHERE id = ?", arguments: [id.rawValue]).map(Member.init(row:))
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

    public func createSession(_ session: DashboardSession, audit: AuditEntry) async throws {
        try await database.write { db in
            try Self.insert([audit], db: db)
            try db.execute(
                sql: "INSERT INTO sessions (digest, member_id, csrf_token, created_at, expires_at) VALUES (?, ?, ?, ?, ?)",
                arguments: [
                    Data(session.digest.bytes), session.memberID.rawValue, session.csrfToken, session.createdAt.keywayMilliseconds,
                    session.expiresAt.keywayMilliseconds,
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
                    csrfToken: row["csrf_token"],
                    createdAt: Date(keywayMilliseconds: row["created_at"]),
                    expiresAt: Date(keywayMilliseconds: row["expires_at"])
                )
            }
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
