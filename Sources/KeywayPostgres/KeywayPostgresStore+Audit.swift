public import Foundation
public import KeywayCore
import Logging
import PostgresNIO

/// The audit log. Entries are inserted by the transaction of the change they record
/// (``insert(_:connection:logger:)``); these read, trim and complete it.
extension KeywayPostgresStore {
    /// Inserts `entries` on the caller's connection, inside its transaction, with the webhook
    /// events their changes send: if an insert fails, so does the change.
    static func insert(_ entries: [AuditEntry], connection: PostgresConnection, logger: Logger) async throws {
        for entry in entries {
            if let event = WebhookEvent(entry) { try await enqueue(event, connection: connection, logger: logger) }
            try await connection.query(
                """
                INSERT INTO audit_log (id, at, account_id, environment, event, actor, resource_type, resource_id, resource_hint,
                    hashed_token, client_address, user_agent, request_id, details)
                VALUES (\(entry.id), \(entry.at.keywayMilliseconds), \(entry.accountID?.rawValue), \(entry.environment?.rawValue),
                    \(entry.event.rawValue), \(entry.actor), \(entry.resourceType), \(entry.resourceID), \(entry.resourceHint),
                    \(entry.hashedToken), \(entry.clientAddress), \(entry.userAgent), \(entry.requestID),
                    \(try AuditDetails.encode(entry.details)))
                """,
                logger: logger
            )
        }
    }

    public func recordAudit(_ entry: AuditEntry) async throws {
        try await transaction { connection in try await Self.insert([entry], connection: connection, logger: logger) }
    }

    typealias AuditRow = (String, Int64, String?, String?, String, String, String?, String?, String?, String?, String?, String?, String?, String)

    public func auditEntries(for accountID: AccountID?, matching query: AuditQuery) async throws -> [AuditEntry] {
        let before = query.before.map { ($0.at.keywayMilliseconds, $0.id) } ?? (Int64.max, "")
        // Two spellings rather than IS NOT DISTINCT FROM, which no index serves.
        let account = accountID?.rawValue
        let rows = try await all(
            """
            SELECT id, at, account_id, environment, event, actor, resource_type, resource_id, resource_hint, hashed_token,
                client_address, user_agent, request_id, details
            FROM audit_log
            WHERE ((\(account)::text IS NULL AND account_id IS NULL) OR account_id = \(account))
                AND (\(query.event?.rawValue)::text IS NULL OR event = \(query.event?.rawValue))
                AND (\(query.environment?.rawValue)::text IS NULL OR environment = \(query.environment?.rawValue))
                AND at >= \(query.since?.keywayMilliseconds ?? Int64.min)
                AND (at, id) < (\(before.0), \(before.1))
            ORDER BY at DESC, id DESC
            LIMIT \(query.limit)
            """,
            as: AuditRow.self
        )
        return try rows.map(Self.auditEntry)
    }

    public func deleteAuditEntries(before date: Date) async throws -> Int {
        try await first(
            "WITH deleted AS (DELETE FROM audit_log WHERE at < \(date.keywayMilliseconds) RETURNING 1) SELECT count(*) FROM deleted",
            as: Int64.self
        )
        .map(Int.init) ?? 0
    }

    public func recordExpiredGraces(at date: Date) async throws -> Int {
        try await transaction { connection in
            // The update claims each key once, whichever instance runs first; the others find nothing.
            let rows = try await connection.query(
                """
                UPDATE secret_keys SET grace_audit_pending = false
                WHERE grace_audit_pending AND revoked_at <= \(date.keywayMilliseconds)
                RETURNING \(unescaped: Self.keyColumns)
                """,
                logger: logger
            ).decode(KeyRow.self)
            var ended: [SecretKeyRecord] = []
            for try await row in rows { ended.append(try Self.record(row)) }
            try await Self.insert(ended.map(AuditEntry.keyExpired), connection: connection, logger: logger)
            return ended.count
        }
    }

    static func auditEntry(_ row: AuditRow) throws -> AuditEntry {
        guard let event = AuditEvent(rawValue: row.4) else {
            throw SchemaError("An audit entry has the event '\(row.4)', which this Keyway does not know.")
        }
        return AuditEntry(
            id: row.0,
            at: Date(keywayMilliseconds: row.1),
            accountID: row.2.map(AccountID.init(rawValue:)),
            environment: try row.3.map(environment),
            event: event,
            context: AuditContext(actor: row.5, clientAddress: row.10, userAgent: row.11, requestID: row.12),
            resourceType: row.6,
            resourceID: row.7,
            resourceHint: row.8,
            hashedToken: row.9,
            details: try AuditDetails.decode(row.13)
        )
    }
}
