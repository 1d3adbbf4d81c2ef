public import Foundation
import GRDB
public import KeywayCore
import Synchronization

/// Secret keys: generations, lookups by digest, the revocation log and last use.
extension KeywaySQLiteStore {
    public func insertKeyRevokingPrevious(
        _ key: GeneratedSecretKey,
        for environmentID: EnvironmentID,
        replacing replacement: KeyReplacement,
        retiring retirement: KeyRetirement,
        limit: KeyGenerationLimit?,
        audit: AuditContext,
        at date: Date
    ) async throws -> KeyGeneration {
        let record = SecretKeyRecord(new: key, for: environmentID, createdBy: audit.actor, at: date)
        return try await database.write { db in
            guard try Bool.fetchOne(db, sql: "SELECT 1 FROM accounts WHERE id = ?", arguments: [environmentID.accountID.rawValue]) != nil
            else {
                throw KeywayError.accountNotFound(environmentID.accountID)
            }
            if let limit {
                // In the write transaction: one writer at a time, so racing generations cannot all pass.
                let newest = try Int64.fetchAll(
                    db,
                    sql: "SELECT created_at FROM secret_keys WHERE account_id = ? AND environment = ? ORDER BY created_at DESC LIMIT ?",
                    arguments: [environmentID.accountID.rawValue, environmentID.environment.rawValue, limit.count]
                ).map(Date.init(keywayMilliseconds:))
                if let retryAfter = limit.retryAfter(newestGenerations: newest, at: record.createdAt) {
                    throw KeywayError.tooManyKeyGenerations(limit: limit, retryAfter: retryAfter)
                }
            }
            // The current key and a key still in an earlier roll's grace: both are replaced. A key
            // revoked for another reason at a later time than this one (a report that committed
            // first, with a later clock) is revoked already and stays as it is; so is a key whose
            // grace the maintenance service has already recorded as over (a generation dated
            // before that, which waited for the writer).
            let previous = try Row.fetchAll(
                db,
                sql: """
                    SELECT id, digest, hint, revoked_at FROM secret_keys
                    WHERE account_id = ? AND environment = ?
                        AND (revoked_at IS NULL OR (revoked_at > ? AND revocation_reason = 'expired_after_roll' AND grace_audit_pending = 1))
                    """,
                arguments: [environmentID.accountID.rawValue, environmentID.environment.rawValue, record.createdAt.keywayMilliseconds]
            )
            let current = previous.filter { ($0["revoked_at"] as Int64?) == nil }.map { SecretKeyID(rawValue: $0["id"]) }
            if case .only(let expected) = replacement, current != (expected.map { [$0] } ?? []) {
                throw KeywayError.activeKeyChanged
            }
            var sequence = try Int64.fetchOne(db, sql: "SELECT COALESCE(MAX(revocation_sequence), 0) FROM secret_keys") ?? 0
            var revoked: [KeyRevocation] = []
            var entries = [AuditEntry.keyGenerated(record, context: audit)]
            for row in previous {
                sequence += 1
                let (until, reason) = retirement.revocation(ofKeyInGrace: (row["revoked_at"] as Int64?) != nil, at: record.createdAt)
                // A grace that runs on is recorded when it ends (`recordExpiredGraces`); one ended now is recorded here.
                let gracePending = until > record.createdAt
                try db.execute(
                    sql: """
                        UPDATE secret_keys SET revoked_at = ?, revocation_reason = ?, revocation_sequence = ?, grace_audit_pending = ?,
                            expiry_notice_pending = ?
                        WHERE id = ?
                        """,
                    arguments: [
                        until.keywayMilliseconds, reason.rawValue, sequence, gracePending ? 1 : 0, gracePending ? 1 : 0, row["id"] as String,
                    ]
                )
                let revocation = KeyRevocation(sequence: sequence, digest: try row.digest("digest"), revokedAt: until, reason: reason)
                revoked.append(revocation)
                entries.append(
                    .keyReplaced(
                        id: SecretKeyID(rawValue: row["id"]),
                        hint: row["hint"],
                        in: environmentID,
                        revocation: revocation,
                        replacement: record.id,
                        at: record.createdAt,
                        context: audit
                    )
                )
            }
            try db.execute(
                sql: """
                    INSERT INTO secret_keys (id, account_id, environment, digest, hint, created_at, created_by)
                    VALUES (?, ?, ?, ?, ?, ?, ?)
                    """,
                arguments: [
                    record.id.rawValue, environmentID.accountID.rawValue, environmentID.environment.rawValue,
                    Data(key.digest.bytes), record.hint, record.createdAt.keywayMilliseconds, audit.actor,
                ]
            )
            try Self.insert(entries, db: db)
            return KeyGeneration(key: record, revoked: revoked)
        }
    }

    public func secretKey(digest: KeyDigest) async throws -> SecretKeyRecord? {
        do {
            return try pointReader.fetchOne(.secretKeyByDigest) {
                try $0.bind(digest.bytes, at: 1)
            } decode: { columns in
                try SecretKeyRecord(columns: columns)
            }
        } catch let error as DatabaseError where error.resultCode == .SQLITE_BUSY {
            pointReadFallbacks.add(1, ordering: .relaxed)
            return try await database.read { db in
                try Row.fetchOne(db, sql: SQLitePointReader.Query.secretKeyByDigest.sql, arguments: [Data(digest.bytes)])
                    .map(SecretKeyRecord.init(row:))
            }
        }
    }

    public func revokeLeakedKey(digest: KeyDigest, report: LeakReport, audit: AuditContext, at date: Date) async throws -> LeakedKeyOutcome {
        let now = date.keywayPrecision
        // One writer at a time: no generation can come between the read and the update.
        return try await database.write { db in
            guard
                let record = try Row.fetchOne(db, sql: "SELECT * FROM secret_keys WHERE digest = ?", arguments: [Data(digest.bytes)])
                    .map(SecretKeyRecord.init(row:))
            else { return .unknown }
            guard record.isAccepted(at: now) else { return .alreadyRevoked(record) }
            let sequence = (try Int64.fetchOne(db, sql: "SELECT COALESCE(MAX(revocation_sequence), 0) FROM secret_keys") ?? 0) + 1
            try db.execute(
                sql: """
                    UPDATE secret_keys SET revoked_at = ?, revocation_reason = ?, revocation_sequence = ?, grace_audit_pending = 0,
                        expiry_notice_pending = 0
                    WHERE id = ?
                    """,
                arguments: [now.keywayMilliseconds, RevocationReason.leaked.rawValue, sequence, record.id.rawValue]
            )
            try Self.insert([.keyLeaked(record, report: report, at: now, context: audit)], db: db)
            return .revoked(record, KeyRevocation(sequence: sequence, digest: digest, revokedAt: now, reason: .leaked))
        }
    }

    public func secretKeys(for accountID: AccountID) async throws -> [SecretKeyRecord] {
        try await database.read { db in
            try Row.fetchAll(
                db,
                sql: "SELECT * FROM secret_keys WHERE account_id = ? ORDER BY created_at DESC, id DESC",
                arguments: [accountID.rawValue]
            ).map(SecretKeyRecord.init(row:))
        }
    }

    public func revocations(after sequence: Int64, limit: Int) async throws -> [KeyRevocation] {
        try await database.read { db in
            try Row.fetchAll(
                db,
                sql: """
                    SELECT revocation_sequence, digest, revoked_at, revocation_reason FROM secret_keys
                    WHERE revocation_sequence > ? ORDER BY revocation_sequence LIMIT ?
                    """,
                arguments: [sequence, limit]
            ).map { row in
                KeyRevocation(
                    sequence: row["revocation_sequence"],
                    digest: try row.digest("digest"),
                    revokedAt: Date(keywayMilliseconds: row["revoked_at"]),
                    reason: RevocationReason(rawValue: row["revocation_reason"]) ?? .regenerated
                )
            }
        }
    }

    public func latestRevocationSequence() async throws -> Int64 {
        try await database.read { db in
            try Int64.fetchOne(db, sql: "SELECT COALESCE(MAX(revocation_sequence), 0) FROM secret_keys") ?? 0
        }
    }

    public func recordKeyUsage(_ lastUsed: [SecretKeyID: Date]) async throws {
        try await database.write { db in
            for (id, date) in lastUsed {
                try db.execute(
                    sql: "UPDATE secret_keys SET last_used_at = MAX(COALESCE(last_used_at, 0), ?) WHERE id = ?",
                    arguments: [date.keywayMilliseconds, id.rawValue]
                )
            }
        }
    }
}
