public import Foundation
import GRDB
public import KeywayCore

/// Members' second factors: the sealed TOTP secret, its last used step, recovery codes.
extension KeywaySQLiteStore {
    public func twoFactor(of member: MemberID) async throws -> TwoFactorRecord? {
        try await database.read { db in
            guard
                let row = try Row.fetchOne(
                    db,
                    sql: """
                        SELECT totp_sealed_secret, totp_last_step, totp_failures,
                               (SELECT count(*) FROM recovery_codes WHERE member_id = members.id AND used_at IS NULL) AS codes_left
                        FROM members WHERE id = ? AND totp_sealed_secret IS NOT NULL
                        """,
                    arguments: [member.rawValue]
                )
            else { return nil }
            return TwoFactorRecord(
                sealedSecret: row["totp_sealed_secret"],
                lastStep: row["totp_last_step"],
                recoveryCodesLeft: row["codes_left"],
                failures: row["totp_failures"]
            )
        }
    }

    public func pendingTwoFactorSecret(of member: MemberID) async throws -> Data? {
        try await database.read { db in
            try Data.fetchOne(db, sql: "SELECT totp_pending_sealed_secret FROM members WHERE id = ?", arguments: [member.rawValue])
        }
    }

    public func setPendingTwoFactorSecret(_ sealed: Data, of member: MemberID) async throws {
        try await database.write { db in
            try db.execute(sql: "UPDATE members SET totp_pending_sealed_secret = ? WHERE id = ?", arguments: [sealed, member.rawValue])
        }
    }

    public func enableTwoFactor(
        of member: MemberID,
        pending: Data,
        usedStep step: Int64,
        recoveryCodes: [KeyDigest],
        keepingSession session: KeyDigest?,
        audit: AuditEntry
    ) async throws -> Bool {
        try await database.write { db in
            try db.execute(
                sql: """
                    UPDATE members SET totp_sealed_secret = totp_pending_sealed_secret, totp_pending_sealed_secret = NULL, totp_last_step = ?
                    WHERE id = ? AND totp_pending_sealed_secret = ?
                    """,
                arguments: [step, member.rawValue, pending]
            )
            guard db.changesCount == 1 else { return false }
            try Self.replaceRecoveryCodes(of: member, with: recoveryCodes, db: db)
            try Self.endSessions(of: member, keeping: session, db: db)
            try Self.insert([audit], db: db)
            return true
        }
    }

    /// Ends a member's sessions but `session`: a change to how they sign in leaves no other
    /// session opened the old way.
    static func endSessions(of member: MemberID, keeping session: KeyDigest?, db: Database) throws {
        try db.execute(
            sql: "DELETE FROM sessions WHERE member_id = ? AND digest IS NOT ?",
            arguments: [member.rawValue, session.map { Data($0.bytes) }]
        )
    }

    static func replaceRecoveryCodes(of member: MemberID, with digests: [KeyDigest], db: Database) throws {
        try db.execute(sql: "DELETE FROM recovery_codes WHERE member_id = ?", arguments: [member.rawValue])
        for digest in digests {
            try db.execute(
                sql: "INSERT INTO recovery_codes (member_id, digest) VALUES (?, ?)",
                arguments: [member.rawValue, Data(digest.bytes)]
            )
        }
    }

    public func disableTwoFactor(of member: MemberID, keepingSession session: KeyDigest?, audit: AuditEntry) async throws -> Bool {
        try await database.write { db in
            try db.execute(
                sql: """
                    UPDATE members SET totp_sealed_secret = NULL, totp_pending_sealed_secret = NULL, totp_last_step = NULL
                    WHERE id = ? AND totp_sealed_secret IS NOT NULL
                    """,
                arguments: [member.rawValue]
            )
            guard db.changesCount == 1 else { return false }
            try Self.replaceRecoveryCodes(of: member, with: [], db: db)
            try Self.endSessions(of: member, keeping: session, db: db)
            try Self.insert([audit], db: db)
            return true
        }
    }

    public func useTwoFactorStep(_ step: Int64, of member: MemberID) async throws -> Bool {
        try await database.write { db in
            try db.execute(
                sql: """
                    UPDATE members SET totp_last_step = ?, totp_failures = 0
                    WHERE id = ? AND totp_sealed_secret IS NOT NULL AND (totp_last_step IS NULL OR totp_last_step < ?)
                    """,
                arguments: [step, member.rawValue, step]
            )
            return db.changesCount == 1
        }
    }

    public func recordTwoFactorFailure(of member: MemberID) async throws {
        try await database.write { db in
            try db.execute(sql: "UPDATE members SET totp_failures = totp_failures + 1 WHERE id = ?", arguments: [member.rawValue])
        }
    }

    public func useRecoveryCode(_ digest: KeyDigest, of member: MemberID, at date: Date) async throws -> Bool {
        try await database.write { db in
            try db.execute(
                sql: "UPDATE recovery_codes SET used_at = ? WHERE member_id = ? AND digest = ? AND used_at IS NULL",
                arguments: [date.keywayMilliseconds, member.rawValue, Data(digest.bytes)]
            )
            guard db.changesCount == 1 else { return false }
            try db.execute(sql: "UPDATE members SET totp_failures = 0 WHERE id = ?", arguments: [member.rawValue])
            return true
        }
    }

    public func completeSecondFactor(digest: KeyDigest, at date: Date, expiresAt: Date, audit: AuditEntry) async throws -> Bool {
        try await database.write { db in
            try db.execute(
                sql: """
                    UPDATE sessions SET second_factor_pending = 0, expires_at = ?
                    WHERE digest = ? AND second_factor_pending = 1 AND expires_at > ?
                    """,
                arguments: [expiresAt.keywayMilliseconds, Data(digest.bytes), date.keywayMilliseconds]
            )
            guard db.changesCount == 1 else { return false }
            try Self.insert([audit], db: db)
            return true
        }
    }
}
