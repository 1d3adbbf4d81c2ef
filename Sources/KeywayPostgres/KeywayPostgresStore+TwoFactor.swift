public import Foundation
public import KeywayCore
import Logging
import PostgresNIO

/// Members' second factors: the sealed TOTP secret, its last used step, recovery codes.
extension KeywayPostgresStore {
    public func twoFactor(of member: MemberID) async throws -> TwoFactorRecord? {
        try await first(
            """
            SELECT totp_sealed_secret, totp_last_step,
                   (SELECT count(*) FROM recovery_codes WHERE member_id = members.id AND used_at IS NULL), totp_failures
            FROM members WHERE id = \(member.rawValue) AND totp_sealed_secret IS NOT NULL
            """,
            as: (Data, Int64?, Int64, Int32).self
        ).map { row in TwoFactorRecord(sealedSecret: row.0, lastStep: row.1, recoveryCodesLeft: Int(row.2), failures: Int(row.3)) }
    }

    public func pendingTwoFactorSecret(of member: MemberID) async throws -> Data? {
        try await first("SELECT totp_pending_sealed_secret FROM members WHERE id = \(member.rawValue)", as: (Data?).self) ?? nil
    }

    public func setPendingTwoFactorSecret(_ sealed: Data, of member: MemberID) async throws {
        try await client.query("UPDATE members SET totp_pending_sealed_secret = \(sealed) WHERE id = \(member.rawValue)", logger: logger)
    }

    public func enableTwoFactor(
        of member: MemberID,
        pending: Data,
        usedStep step: Int64,
        recoveryCodes: [KeyDigest],
        keepingSession session: KeyDigest?,
        audit: AuditEntry
    ) async throws -> Bool {
        try await transaction { connection in
            // The row lock taken by the update orders two confirmations of one setup: the second finds nothing pending.
            guard
                try await Self.first(
                    """
                    UPDATE members
                    SET totp_sealed_secret = totp_pending_sealed_secret, totp_pending_sealed_secret = NULL, totp_last_step = \(step)
                    WHERE id = \(member.rawValue) AND totp_pending_sealed_secret = \(pending)
                    RETURNING 1
                    """,
                    as: (Int32).self,
                    on: connection,
                    logger: logger
                ) != nil
            else { return false }
            try await Self.replaceRecoveryCodes(of: member, with: recoveryCodes, on: connection, logger: logger)
            try await Self.endSessions(of: member, keeping: session, on: connection, logger: logger)
            try await Self.insert([audit], connection: connection, logger: logger)
            return true
        }
    }

    /// Ends a member's sessions but `session`: a change to how they sign in leaves no other
    /// session opened the old way.
    static func endSessions(of member: MemberID, keeping session: KeyDigest?, on connection: PostgresConnection, logger: Logger) async throws {
        try await connection.query(
            "DELETE FROM sessions WHERE member_id = \(member.rawValue) AND digest IS DISTINCT FROM \(session.map { Data($0.bytes) })",
            logger: logger
        )
    }

    static func replaceRecoveryCodes(
        of member: MemberID,
        with digests: [KeyDigest],
        on connection: PostgresConnection,
        logger: Logger
    )
        async throws
    {
        try await connection.query("DELETE FROM recovery_codes WHERE member_id = \(member.rawValue)", logger: logger)
        for digest in digests {
            try await connection.query(
                "INSERT INTO recovery_codes (member_id, digest) VALUES (\(member.rawValue), \(Data(digest.bytes)))",
                logger: logger
            )
        }
    }

    public func disableTwoFactor(of member: MemberID, keepingSession session: KeyDigest?, audit: AuditEntry) async throws -> Bool {
        try await transaction { connection in
            guard
                try await Self.first(
                    """
                    UPDATE members SET totp_sealed_secret = NULL, totp_pending_sealed_secret = NULL, totp_last_step = NULL
                    WHERE id = \(member.rawValue) AND totp_sealed_secret IS NOT NULL
                    RETURNING 1
                    """,
                    as: (Int32).self,
                    on: connection,
                    logger: logger
                ) != nil
            else { return false }
            try await Self.replaceRecoveryCodes(of: member, with: [], on: connection, logger: logger)
            try await Self.endSessions(of: member, keeping: session, on: connection, logger: logger)
            try await Self.insert([audit], connection: connection, logger: logger)
            return true
        }
    }

    public func useTwoFactorStep(_ step: Int64, of member: MemberID) async throws -> Bool {
        // One statement: the row lock makes a second use of the same step see the first's.
        try await first(
            """
            UPDATE members SET totp_last_step = \(step), totp_failures = 0
            WHERE id = \(member.rawValue) AND totp_sealed_secret IS NOT NULL AND (totp_last_step IS NULL OR totp_last_step < \(step))
            RETURNING 1
            """,
            as: Int32.self
        ) != nil
    }

    public func recordTwoFactorFailure(of member: MemberID) async throws {
        try await client.query("UPDATE members SET totp_failures = totp_failures + 1 WHERE id = \(member.rawValue)", logger: logger)
    }

    public func useRecoveryCode(_ digest: KeyDigest, of member: MemberID, at date: Date) async throws -> Bool {
        // One statement: the code's row is marked once, and the failures clear with it.
        try await first(
            """
            WITH used AS (
                UPDATE recovery_codes SET used_at = \(date.keywayMilliseconds)
                WHERE member_id = \(member.rawValue) AND digest = \(Data(digest.bytes)) AND used_at IS NULL
                RETURNING member_id
            )
            UPDATE members SET totp_failures = 0 FROM used WHERE members.id = used.member_id
            RETURNING 1
            """,
            as: Int32.self
        ) != nil
    }

    public func completeSecondFactor(digest: KeyDigest, at date: Date, expiresAt: Date, audit: AuditEntry) async throws -> Bool {
        try await transaction { connection in
            guard
                try await Self.first(
                    """
                    UPDATE sessions SET second_factor_pending = false, expires_at = \(expiresAt.keywayMilliseconds)
                    WHERE digest = \(Data(digest.bytes)) AND second_factor_pending AND expires_at > \(date.keywayMilliseconds)
                    RETURNING 1
                    """,
                    as: (Int32).self,
                    on: connection,
                    logger: logger
                ) != nil
            else { return false }
            try await Self.insert([audit], connection: connection, logger: logger)
            return true
        }
    }
}
