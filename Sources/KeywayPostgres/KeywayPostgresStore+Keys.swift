public import Foundation
public import KeywayCore
import Logging
import PostgresNIO

/// Secret keys: generations, lookups by digest, the revocation log and last use.
extension KeywayPostgresStore {
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
        let account = environmentID.accountID.rawValue
        let environment = environmentID.environment.rawValue
        return try await transaction { connection in
            // One generation at a time per environment, across all instances, so the checks below
            // and the update cannot interleave with another generation of the environment; other
            // environments' generations do not wait. Each statement must see what was committed
            // before a lock was granted, which READ COMMITTED gives whatever the database's default
            // isolation is (under REPEATABLE READ the snapshot would predate the lock).
            try await connection.query("SET TRANSACTION ISOLATION LEVEL READ COMMITTED", logger: logger)
            try await connection.query(Self.generationLock(for: environmentID), logger: logger)
            let exists = try await connection.query("SELECT 1 FROM accounts WHERE id = \(account)", logger: logger).decode(Int32.self)
            var found = false
            for try await _ in exists { found = true }
            guard found else { throw KeywayError.accountNotFound(environmentID.accountID) }
            if let limit {
                // Under the environment's lock: racing generations cannot all pass.
                let rows = try await connection.query(
                    """
                    SELECT created_at FROM secret_keys WHERE account_id = \(account) AND environment = \(environment)
                    ORDER BY created_at DESC LIMIT \(limit.count)
                    """,
                    logger: logger
                ).decode(Int64.self)
                var newest: [Date] = []
                for try await created in rows { newest.append(Date(keywayMilliseconds: created)) }
                if let retryAfter = limit.retryAfter(newestGenerations: newest, at: record.createdAt) {
                    throw KeywayError.tooManyKeyGenerations(limit: limit, retryAfter: retryAfter)
                }
            }
            // The current key and a key still in an earlier roll's grace: both are replaced. Read
            // under the environment's generation lock, so no other generation (or leak report) can
            // come between this and the updates. A key revoked for another reason at a later time
            // than this one (a report that committed first, with a later clock) stays as it is; so
            // does a key whose grace the maintenance service has recorded as over (it takes no
            // environment lock: the update checks again, and skips a key it claimed meanwhile).
            let now = record.createdAt.keywayMilliseconds
            let rows = try await connection.query(
                """
                SELECT id, digest, hint, revoked_at IS NOT NULL FROM secret_keys
                WHERE account_id = \(account) AND environment = \(environment)
                    AND (revoked_at IS NULL OR (revoked_at > \(now) AND revocation_reason = 'expired_after_roll' AND grace_audit_pending))
                """,
                logger: logger
            ).decode((String, Data, String, Bool).self)
            var previous: [(id: String, digest: Data, hint: String, inGrace: Bool)] = []
            for try await row in rows { previous.append((row.0, row.1, row.2, row.3)) }
            if case .only(let expected) = replacement {
                let current = previous.filter { !$0.inGrace }.map { SecretKeyID(rawValue: $0.id) }
                guard current == (expected.map { [$0] } ?? []) else { throw KeywayError.activeKeyChanged }
            }

            // Revocation numbers must commit in the order they are drawn, so a follower reading
            // "after n" can never skip one: they are drawn under one lock for all environments,
            // taken last and held only for the updates, the insert and the commit.
            try await connection.query("SELECT pg_advisory_xact_lock(\(Self.revocationSequenceLock))", logger: logger)
            var revoked: [KeyRevocation] = []
            var entries = [AuditEntry.keyGenerated(record, context: audit)]
            // One row per statement: each draws its own number.
            for key in previous {
                let (until, reason) = retirement.revocation(ofKeyInGrace: key.inGrace, at: record.createdAt)
                // A grace that runs on is recorded when it ends (`recordExpiredGraces`); one ended now is recorded here.
                let gracePending = until > record.createdAt
                let sequences = try await connection.query(
                    """
                    UPDATE secret_keys SET revoked_at = \(until.keywayMilliseconds), revocation_reason = \(reason.rawValue),
                        revocation_sequence = (SELECT COALESCE(MAX(revocation_sequence), 0) + 1 FROM secret_keys),
                        grace_audit_pending = \(gracePending), expiry_notice_pending = \(gracePending)
                    WHERE id = \(key.id) AND (revoked_at IS NULL OR grace_audit_pending)
                    RETURNING revocation_sequence
                    """,
                    logger: logger
                ).decode(Int64.self)
                for try await sequence in sequences {
                    let revocation = KeyRevocation(sequence: sequence, digest: try Self.digest(key.digest), revokedAt: until, reason: reason)
                    revoked.append(revocation)
                    entries.append(
                        .keyReplaced(
                            id: SecretKeyID(rawValue: key.id),
                            hint: key.hint,
                            in: environmentID,
                            revocation: revocation,
                            replacement: record.id,
                            at: record.createdAt,
                            context: audit
                        )
                    )
                }
            }
            try await connection.query(
                """
                INSERT INTO secret_keys (id, account_id, environment, digest, hint, created_at, created_by)
                VALUES (\(record.id.rawValue), \(account), \(environment), \(Data(key.digest.bytes)), \(record.hint),
                        \(record.createdAt.keywayMilliseconds), \(audit.actor))
                """,
                logger: logger
            )
            try await Self.insert(entries, connection: connection, logger: logger)
            if let last = revoked.last {
                try await connection.query("SELECT pg_notify(\(Self.revocationChannel), \(String(last.sequence)))", logger: logger)
            }
            return KeyGeneration(key: record, revoked: revoked)
        }
    }

    public func revokeLeakedKey(digest: KeyDigest, report: LeakReport, audit: AuditContext, at date: Date) async throws -> LeakedKeyOutcome {
        let now = date.keywayPrecision
        guard let found = try await Self.secretKeys(digests: [digest], client: client, logger: logger)[digest] else { return .unknown }
        return try await transaction { connection in
            // As a generation does: under the environment's lock, so a generation cannot read the
            // key as replaceable and then overwrite this revocation; read again under it.
            try await connection.query("SET TRANSACTION ISOLATION LEVEL READ COMMITTED", logger: logger)
            try await connection.query(Self.generationLock(for: found.environmentID), logger: logger)
            let rows = try await connection.query(
                "SELECT \(unescaped: Self.keyColumns) FROM secret_keys WHERE id = \(found.id.rawValue)",
                logger: logger
            ).decode(KeyRow.self)
            var current: SecretKeyRecord?
            for try await row in rows { current = try Self.record(row) }
            guard let record = current else { return .unknown }
            guard record.isAccepted(at: now) else { return .alreadyRevoked(record) }
            try await connection.query("SELECT pg_advisory_xact_lock(\(Self.revocationSequenceLock))", logger: logger)
            let sequences = try await connection.query(
                """
                UPDATE secret_keys SET revoked_at = \(now.keywayMilliseconds), revocation_reason = \(RevocationReason.leaked.rawValue),
                    revocation_sequence = (SELECT COALESCE(MAX(revocation_sequence), 0) + 1 FROM secret_keys),
                    grace_audit_pending = false, expiry_notice_pending = false
                WHERE id = \(record.id.rawValue)
                RETURNING revocation_sequence
                """,
                logger: logger
            ).decode(Int64.self)
            var sequence: Int64 = 0
            for try await drawn in sequences { sequence = drawn }
            try await Self.insert([.keyLeaked(record, report: report, at: now, context: audit)], connection: connection, logger: logger)
            try await connection.query("SELECT pg_notify(\(Self.revocationChannel), \(String(sequence)))", logger: logger)
            return .revoked(record, KeyRevocation(sequence: sequence, digest: digest, revokedAt: now, reason: .leaked))
        }
    }

    public func secretKey(digest: KeyDigest) async throws -> SecretKeyRecord? {
        // Reached only by keys the caller's cache does not know; concurrent ones share a query.
        try await keyLookups.value(for: digest)
    }

    static func secretKeys(digests: [KeyDigest], client: PostgresClient, logger: Logger) async throws -> [KeyDigest: SecretKeyRecord] {
        var records: [KeyDigest: SecretKeyRecord] = [:]
        for try await record in try await client.execute(KeysByDigest(digests: digests), logger: logger) {
            records[record.digest] = record
        }
        return records
    }

    public func secretKeys(for accountID: AccountID) async throws -> [SecretKeyRecord] {
        try await all(
            "SELECT \(unescaped: Self.keyColumns) FROM secret_keys WHERE account_id = \(accountID.rawValue) ORDER BY created_at DESC, id DESC",
            as: KeyRow.self
        ).map(Self.record)
    }

    public func revocations(after sequence: Int64, limit: Int) async throws -> [KeyRevocation] {
        try await all(
            """
            SELECT revocation_sequence, digest, revoked_at, revocation_reason FROM secret_keys
            WHERE revocation_sequence > \(sequence) ORDER BY revocation_sequence LIMIT \(limit)
            """,
            as: (Int64, Data, Int64, String).self
        ).map { row in
            KeyRevocation(
                sequence: row.0,
                digest: try Self.digest(row.1),
                revokedAt: Date(keywayMilliseconds: row.2),
                reason: RevocationReason(rawValue: row.3) ?? .regenerated
            )
        }
    }

    public func latestRevocationSequence() async throws -> Int64 {
        try await first("SELECT COALESCE(MAX(revocation_sequence), 0)::BIGINT FROM secret_keys", as: Int64.self) ?? 0
    }

    public func recordKeyUsage(_ lastUsed: [SecretKeyID: Date]) async throws {
        guard !lastUsed.isEmpty else { return }
        try await transaction { connection in
            for (id, date) in lastUsed {
                try await connection.query(
                    "UPDATE secret_keys SET last_used_at = GREATEST(COALESCE(last_used_at, 0), \(date.keywayMilliseconds)) WHERE id = \(id.rawValue)",
                    logger: logger
                )
            }
        }
    }
}

/// Every key among `digests`: the batched lookup of keys no cache knows.
private struct KeysByDigest: PostgresPreparedStatement {
    static let name = "keyway_keys_by_digest"
    static let sql = "SELECT \(KeywayPostgresStore.keyColumns) FROM secret_keys WHERE digest = ANY($1)"
    typealias Row = SecretKeyRecord

    let digests: [KeyDigest]

    func makeBindings() -> PostgresBindings {
        var bindings = PostgresBindings(capacity: 1)
        bindings.append(digests.map { ByteBuffer(bytes: $0.bytes) })
        return bindings
    }

    func decodeRow(_ row: PostgresRow) throws -> SecretKeyRecord {
        try KeywayPostgresStore.record(row.decode(KeywayPostgresStore.KeyRow.self))
    }
}
