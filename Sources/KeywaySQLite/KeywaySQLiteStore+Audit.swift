public import Foundation
import GRDB
public import KeywayCore

/// The audit log. Entries are inserted by the transaction of the change they record
/// (``insert(_:db:)``); these read, trim and complete it.
extension KeywaySQLiteStore {
    /// Inserts `entries` in the caller's transaction, with the webhook events their changes
    /// send: if an insert fails, so does the change.
    static func insert(_ entries: [AuditEntry], db: Database) throws {
        for entry in entries {
            if let event = WebhookEvent(entry) { try enqueue(event, db: db) }
            try db.execute(
                sql: """
                    INSERT INTO audit_log (id, at, account_id, environment, event, actor, resource_type, resource_id, resource_hint,
                        hashed_token, client_address, user_agent, request_id, details)
                    VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
                    """,
                arguments: [
                    entry.id, entry.at.keywayMilliseconds, entry.accountID?.rawValue, entry.environment?.rawValue, entry.event.rawValue,
                    entry.actor, entry.resourceType, entry.resourceID, entry.resourceHint, entry.hashedToken, entry.clientAddress,
                    entry.userAgent, entry.requestID, try AuditDetails.encode(entry.details),
                ]
            )
        }
    }

    public func recordAudit(_ entry: AuditEntry) async throws {
        try await database.write { db in try Self.insert([entry], db: db) }
    }

    public func auditEntries(for accountID: AccountID?, matching query: AuditQuery) async throws -> [AuditEntry] {
        var conditions = [accountID == nil ? "account_id IS NULL" : "account_id = ?"]
        var arguments: StatementArguments = accountID.map { [$0.rawValue] } ?? []
        if let event = query.event {
            conditions.append("event = ?")
            _ = arguments.append(contentsOf: [event.rawValue])
        }
        if let environment = query.environment {
            conditions.append("environment = ?")
            _ = arguments.append(contentsOf: [environment.rawValue])
        }
        if let since = query.since {
            conditions.append("at >= ?")
            _ = arguments.append(contentsOf: [since.keywayMilliseconds])
        }
        if let before = query.before {
            conditions.append("(at < ? OR (at = ? AND id < ?))")
            _ = arguments.append(contentsOf: [before.at.keywayMilliseconds, before.at.keywayMilliseconds, before.id])
        }
        _ = arguments.append(contentsOf: [query.limit])
        let sql = "SELECT * FROM audit_log WHERE \(conditions.joined(separator: " AND ")) ORDER BY at DESC, id DESC LIMIT ?"
        let bound = arguments
        return try await database.read { db in
            try Row.fetchAll(db, sql: sql, arguments: bound).map(AuditEntry.init(row:))
        }
    }

    public func deleteAuditEntries(before date: Date) async throws -> Int {
        try await database.write { db in
            try db.execute(sql: "DELETE FROM audit_log WHERE at < ?", arguments: [date.keywayMilliseconds])
            return db.changesCount
        }
    }

    public func recordExpiredGraces(at date: Date) async throws -> Int {
        // Asked every second by every process: a read (the partial index) first, the writer only when needed.
        let pending = try await database.read { db in
            try Bool.fetchOne(
                db,
                sql: "SELECT 1 FROM secret_keys WHERE grace_audit_pending = 1 AND revoked_at <= ? LIMIT 1",
                arguments: [date.keywayMilliseconds]
            ) != nil
        }
        guard pending else { return 0 }
        return try await database.write { db in
            let ended = try Row.fetchAll(
                db,
                sql: "SELECT * FROM secret_keys WHERE grace_audit_pending = 1 AND revoked_at <= ?",
                arguments: [date.keywayMilliseconds]
            ).map(SecretKeyRecord.init(row:))
            for record in ended {
                try db.execute(sql: "UPDATE secret_keys SET grace_audit_pending = 0 WHERE id = ?", arguments: [record.id.rawValue])
            }
            try Self.insert(ended.map(AuditEntry.keyExpired), db: db)
            return ended.count
        }
    }
}

extension AuditEntry {
    init(row: Row) throws {
        let environment = try (row["environment"] as String?).map { name in
            guard let environment = Environment(rawValue: name) else { throw SchemaError("An audit entry names environment '\(name)'.") }
            return environment
        }
        guard let event = AuditEvent(rawValue: row["event"]) else {
            throw SchemaError("An audit entry has the event '\(row["event"] as String)', which this Keyway does not know.")
        }
        self.init(
            id: row["id"],
            at: Date(keywayMilliseconds: row["at"]),
            accountID: (row["account_id"] as String?).map(AccountID.init(rawValue:)),
            environment: environment,
            event: event,
            context: AuditContext(
                actor: row["actor"],
                clientAddress: row["client_address"],
                userAgent: row["user_agent"],
                requestID: row["request_id"]
            ),
            resourceType: row["resource_type"],
            resourceID: row["resource_id"],
            resourceHint: row["resource_hint"],
            hashedToken: row["hashed_token"],
            details: try AuditDetails.decode(row["details"])
        )
    }
}
