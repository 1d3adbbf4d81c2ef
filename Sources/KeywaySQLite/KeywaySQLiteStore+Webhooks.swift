public import Foundation
import GRDB
public import KeywayCore

/// Webhook endpoints and the outbox. Events are enqueued by the transaction of the change
/// they report (``enqueue(_:db:)``).
extension KeywaySQLiteStore {
    /// Writes `event` to the outbox, once per enabled endpoint of its environment subscribed
    /// to it, in the caller's transaction. Without such an endpoint it is one indexed read.
    /// - Parameter storedData: `event`'s ``WebhookEvent/storedData`` when it was made already (off the writer).
    static func enqueue(_ event: WebhookEvent, storedData: String? = nil, db: Database) throws {
        let endpoints = try String.fetchAll(
            try db.cachedStatement(
                sql: "SELECT id FROM webhook_endpoints WHERE account_id = ? AND environment = ? AND disabled_at IS NULL AND instr(events, ?) > 0"
            ),
            arguments: [event.environmentID.accountID.rawValue, event.environmentID.environment.rawValue, event.type.subscriptionKey]
        )
        guard !endpoints.isEmpty else { return }
        let payload = storedData ?? event.storedData
        let at = event.at.keywayMilliseconds
        let now = Date().keywayMilliseconds
        for endpoint in endpoints {
            try db.cachedStatement(
                sql: """
                    INSERT INTO webhook_deliveries (id, endpoint_id, event_type, payload, created_at, status, attempts, next_attempt_at)
                    VALUES (?, ?, ?, ?, ?, 'pending', 0, ?)
                    """
            ).execute(arguments: [WebhookDelivery.newID(at: event.at), endpoint, event.type.rawValue, payload, at, now])
        }
    }

    public func insertWebhookEndpoint(_ endpoint: WebhookEndpoint, limit: Int, audit: AuditContext) async throws {
        let environmentID = endpoint.environmentID
        try await database.write { db in
            guard
                try Bool.fetchOne(
                    db,
                    sql: "SELECT 1 FROM environments WHERE account_id = ? AND name = ?",
                    arguments: [environmentID.accountID.rawValue, environmentID.environment.rawValue]
                ) != nil
            else { throw KeywayError.accountNotFound(environmentID.accountID) }
            let count =
                try Int.fetchOne(
                    db,
                    sql: "SELECT COUNT(*) FROM webhook_endpoints WHERE account_id = ? AND environment = ?",
                    arguments: [environmentID.accountID.rawValue, environmentID.environment.rawValue]
                ) ?? 0
            guard count < limit else { throw KeywayError.tooManyWebhookEndpoints(limit: limit) }
            guard
                try Bool.fetchOne(
                    db,
                    sql: "SELECT 1 FROM webhook_endpoints WHERE account_id = ? AND environment = ? AND url = ?",
                    arguments: [environmentID.accountID.rawValue, environmentID.environment.rawValue, endpoint.url]
                ) == nil
            else { throw KeywayError.duplicateWebhookURL }
            try db.execute(
                sql: """
                    INSERT INTO webhook_endpoints (id, account_id, environment, url, events, sealed_secret, created_at)
                    VALUES (?, ?, ?, ?, ?, ?, ?)
                    """,
                arguments: [
                    endpoint.id.rawValue, environmentID.accountID.rawValue, environmentID.environment.rawValue, endpoint.url,
                    endpoint.storedEvents, endpoint.sealedSecret, endpoint.createdAt.keywayMilliseconds,
                ]
            )
            try Self.insert(
                [
                    .webhook(
                        .webhookCreated,
                        id: endpoint.id,
                        in: environmentID,
                        at: endpoint.createdAt,
                        context: audit,
                        details: ["url": endpoint.url, "events": endpoint.events.sorted().map(\.rawValue).joined(separator: " ")]
                    )
                ],
                db: db
            )
        }
    }

    public func webhookEndpoints(for accountID: AccountID) async throws -> [WebhookEndpoint] {
        try await database.read { db in
            try Row.fetchAll(
                db,
                sql: "SELECT * FROM webhook_endpoints WHERE account_id = ? ORDER BY created_at, id",
                arguments: [accountID.rawValue]
            ).map(WebhookEndpoint.init(row:))
        }
    }

    public func webhookEndpoint(_ id: WebhookEndpointID, in accountID: AccountID) async throws -> WebhookEndpoint? {
        try await database.read { db in try Self.endpoint(id, in: accountID, db: db) }
    }

    private static func endpoint(_ id: WebhookEndpointID, in accountID: AccountID, db: Database) throws -> WebhookEndpoint? {
        try Row.fetchOne(
            db,
            sql: "SELECT * FROM webhook_endpoints WHERE id = ? AND account_id = ?",
            arguments: [id.rawValue, accountID.rawValue]
        ).map(WebhookEndpoint.init(row:))
    }

    public func updateWebhookEndpoint(
        _ id: WebhookEndpointID,
        in accountID: AccountID,
        events: Set<WebhookEventType>?,
        enabled: Bool?,
        audit: AuditContext,
        at date: Date
    ) async throws -> WebhookEndpoint? {
        try await database.write { db in
            guard let found = try Self.endpoint(id, in: accountID, db: db) else { return nil }
            let (endpoint, details) = found.changed(events: events, enabled: enabled, by: audit.actor, at: date)
            try db.execute(
                sql: "UPDATE webhook_endpoints SET events = ?, disabled_at = ?, disabled_reason = ?, failing_since = ? WHERE id = ?",
                arguments: [
                    endpoint.storedEvents, endpoint.disabledAt?.keywayMilliseconds, endpoint.disabledReason,
                    endpoint.failingSince?.keywayMilliseconds, id.rawValue,
                ]
            )
            if enabled == false { try Self.failPending(id, db: db) }
            try Self.insert([.webhook(.webhookUpdated, id: id, in: endpoint.environmentID, at: date, context: audit, details: details)], db: db)
            return endpoint
        }
    }

    /// Fails a disabled endpoint's waiting deliveries, and drops their claims: an attempt in
    /// flight records nothing over it.
    static func failPending(_ endpoint: WebhookEndpointID, db: Database) throws {
        try db.execute(
            sql: """
                UPDATE webhook_deliveries SET status = 'failed', next_attempt_at = NULL, claim = NULL, claimed_until = NULL,
                    last_error = COALESCE(last_error, 'The endpoint was disabled.')
                WHERE endpoint_id = ? AND status = 'pending'
                """,
            arguments: [endpoint.rawValue]
        )
    }

    public func rotateWebhookSecret(
        _ id: WebhookEndpointID,
        in accountID: AccountID,
        sealedSecret: Data,
        previousExpiresAt: Date,
        audit: AuditContext,
        at date: Date
    ) async throws -> Bool {
        try await database.write { db in
            guard let endpoint = try Self.endpoint(id, in: accountID, db: db) else { return false }
            try db.execute(
                sql: """
                    UPDATE webhook_endpoints SET sealed_previous_secret = sealed_secret, previous_secret_expires_at = ?, sealed_secret = ?
                    WHERE id = ?
                    """,
                arguments: [previousExpiresAt.keywayMilliseconds, sealedSecret, id.rawValue]
            )
            try Self.insert(
                [
                    .webhook(
                        .webhookSecretRotated,
                        id: id,
                        in: endpoint.environmentID,
                        at: date,
                        context: audit,
                        details: ["previousSecretExpiresAt": previousExpiresAt.auditTimestamp]
                    )
                ],
                db: db
            )
            return true
        }
    }

    public func deleteWebhookEndpoint(_ id: WebhookEndpointID, in accountID: AccountID, audit: AuditContext, at date: Date) async throws -> Bool {
        try await database.write { db in
            guard let endpoint = try Self.endpoint(id, in: accountID, db: db) else { return false }
            try db.execute(sql: "DELETE FROM webhook_endpoints WHERE id = ?", arguments: [id.rawValue])
            try Self.insert(
                [.webhook(.webhookDeleted, id: id, in: endpoint.environmentID, at: date, context: audit, details: ["url": endpoint.url])],
                db: db
            )
            return true
        }
    }

    public func webhookDeliveries(for accountID: AccountID, endpoint: WebhookEndpointID?, limit: Int) async throws -> [WebhookDelivery] {
        try await database.read { db in
            let endpoints = try String.fetchAll(
                db,
                sql: "SELECT id FROM webhook_endpoints WHERE account_id = ? AND (? IS NULL OR id = ?)",
                arguments: [accountID.rawValue, endpoint?.rawValue, endpoint?.rawValue]
            )
            // Each endpoint's newest, one range of the primary key each; then the newest of those.
            var deliveries: [WebhookDelivery] = []
            for endpoint in endpoints {
                deliveries += try Row.fetchAll(
                    db,
                    sql: "SELECT * FROM webhook_deliveries WHERE endpoint_id = ? ORDER BY id DESC LIMIT ?",
                    arguments: [endpoint, limit]
                ).map(WebhookDelivery.init(row:))
            }
            return Array(deliveries.sorted { ($0.createdAt, $0.id) > ($1.createdAt, $1.id) }.prefix(limit))
        }
    }

    public func resendWebhookDelivery(_ id: String, in accountID: AccountID, environment: Environment?, at date: Date) async throws -> Bool {
        try await database.write { db in
            try db.execute(
                sql: """
                    UPDATE webhook_deliveries SET status = 'pending', next_attempt_at = ?, attempts = 0, claim = NULL, claimed_until = NULL
                    WHERE id = ?
                      AND endpoint_id IN (
                          SELECT id FROM webhook_endpoints
                          WHERE account_id = ? AND disabled_at IS NULL AND (? IS NULL OR environment = ?)
                      )
                      AND (claimed_until IS NULL OR claimed_until <= ?)
                    """,
                arguments: [
                    date.keywayMilliseconds, id, accountID.rawValue, environment?.rawValue, environment?.rawValue, date.keywayMilliseconds,
                ]
            )
            return db.changesCount == 1
        }
    }

    public func claimWebhookDeliveries(
        at date: Date,
        lease: TimeInterval,
        limit: Int,
        perEndpoint: Int,
        excluding: Set<WebhookEndpointID>
    ) async throws -> [ClaimedWebhookDelivery] {
        let now = date.keywayMilliseconds
        let excluded = String(decoding: try JSONEncoder().encode(excluding.map(\.rawValue)), as: UTF8.self)
        let due = [now, now, excluded, limit, now, now, perEndpoint, limit] as StatementArguments
        // Asked several times a second: a read first, the writer only when there is something to take.
        guard try await database.read({ db in try Bool.fetchOne(db, sql: "SELECT EXISTS (\(Self.claimable))", arguments: due) == true })
        else { return [] }
        let claim = WebhookDelivery.newID()
        return try await database.write { db in
            let deliveries = try Row.fetchAll(
                db,
                sql: """
                    UPDATE webhook_deliveries SET claim = ?, claimed_until = ?
                    WHERE (endpoint_id, id) IN (\(Self.claimable))
                    RETURNING *
                    """,
                arguments: [claim, now + Int64(lease * 1000)] + due
            ).map(WebhookDelivery.init(row:))
            var endpoints: [WebhookEndpointID: WebhookEndpoint] = [:]
            for id in Set(deliveries.map(\.endpointID)) {
                endpoints[id] = try Row.fetchOne(db, sql: "SELECT * FROM webhook_endpoints WHERE id = ?", arguments: [id.rawValue])
                    .map(WebhookEndpoint.init(row:))
            }
            return deliveries.compactMap { delivery in
                endpoints[delivery.endpointID].map { ClaimedWebhookDelivery(delivery: delivery, endpoint: $0, claim: claim) }
            }
        }
    }

    /// The deliveries a claim takes (arguments: now, now, the excluded endpoints as a JSON array,
    /// limit, now, now, per endpoint, limit). Each endpoint with pending deliveries is found by
    /// skipping along the due index (one search per endpoint, however long its backlog); excluded
    /// and disabled ones are left out before their deliveries are read. Only the `limit` whose
    /// oldest due delivery is oldest can give one of the `limit` due longest, so only theirs are
    /// read, at most `perEndpoint` each; of those, the `limit` due longest.
    static let claimable = """
        WITH RECURSIVE pending(endpoint_id) AS (
            SELECT (SELECT endpoint_id FROM webhook_deliveries WHERE status = 'pending' ORDER BY endpoint_id LIMIT 1)
            UNION ALL
            SELECT (
                SELECT d.endpoint_id FROM webhook_deliveries AS d
                WHERE d.status = 'pending' AND d.endpoint_id > pending.endpoint_id ORDER BY d.endpoint_id LIMIT 1
            )
            FROM pending WHERE pending.endpoint_id IS NOT NULL
        ),
        chosen(endpoint_id, oldest) AS MATERIALIZED (
            SELECT * FROM (
                SELECT pending.endpoint_id, (
                    SELECT x.next_attempt_at FROM webhook_deliveries AS x
                    WHERE x.endpoint_id = pending.endpoint_id AND x.status = 'pending' AND x.next_attempt_at <= ?
                      AND (x.claimed_until IS NULL OR x.claimed_until <= ?)
                    ORDER BY x.next_attempt_at LIMIT 1
                ) AS oldest
                FROM pending JOIN webhook_endpoints AS e ON e.id = pending.endpoint_id AND e.disabled_at IS NULL
                WHERE pending.endpoint_id NOT IN (SELECT value FROM json_each(?))
            )
            WHERE oldest IS NOT NULL ORDER BY oldest LIMIT ?
        )
        SELECT d.endpoint_id, d.id FROM chosen
        JOIN webhook_deliveries AS d ON d.endpoint_id = chosen.endpoint_id AND d.id IN (
            SELECT x.id FROM webhook_deliveries AS x
            WHERE x.endpoint_id = chosen.endpoint_id AND x.status = 'pending' AND x.next_attempt_at <= ?
              AND (x.claimed_until IS NULL OR x.claimed_until <= ?)
            ORDER BY x.next_attempt_at LIMIT ?
        )
        ORDER BY d.next_attempt_at LIMIT ?
        """

    public func recordWebhookAttempt(_ record: WebhookAttemptRecord) async throws {
        try await webhookAttempts.submit(record)
    }

    /// Records one attempt in the caller's transaction (see ``recordWebhookAttempt(_:)``).
    static func record(_ record: WebhookAttemptRecord, db: Database) throws {
        let (status, next): (String, Int64?) =
            switch record.next {
            case .succeeded: ("succeeded", nil)
            case .retry(let date): ("pending", date.keywayMilliseconds)
            case .failed: ("failed", nil)
            }
        let at = record.at.keywayMilliseconds
        try db.cachedStatement(
            sql: """
                UPDATE webhook_deliveries SET status = ?, next_attempt_at = ?, attempts = attempts + 1, last_attempt_at = ?,
                    last_status_code = ?, last_error = ?, claim = NULL, claimed_until = NULL
                WHERE endpoint_id = ? AND id = ? AND claim = ?
                """
        ).execute(arguments: [status, next, at, record.statusCode, record.error, record.endpointID.rawValue, record.deliveryID, record.claim])
        // A claim that lapsed (another process took the delivery) records nothing.
        guard db.changesCount == 1 else { return }
        if case .succeeded = record.next {
            // Only when it was failing: a success on a healthy endpoint writes nothing more.
            try db.cachedStatement(sql: "UPDATE webhook_endpoints SET failing_since = NULL WHERE id = ? AND failing_since IS NOT NULL")
                .execute(arguments: [record.endpointID.rawValue])
        } else {
            // A failure more than a day after the last one starts a new streak (see `failureStreak`).
            try db.cachedStatement(
                sql: """
                    UPDATE webhook_endpoints
                    SET failing_since = CASE WHEN failing_since IS NULL OR last_failure_at IS NULL OR last_failure_at < ? THEN ? ELSE failing_since END,
                        last_failure_at = ?
                    WHERE id = ?
                    """
            ).execute(arguments: [at - Int64(WebhookRetrySchedule.longestWait * 1000), at, at, record.endpointID.rawValue])
        }
        guard let reason = record.disableEndpoint,
            let endpoint = try Row.fetchOne(
                db,
                sql: "SELECT * FROM webhook_endpoints WHERE id = ? AND disabled_at IS NULL",
                arguments: [record.endpointID.rawValue]
            ).map(WebhookEndpoint.init(row:))
        else { return }
        try db.execute(
            sql: "UPDATE webhook_endpoints SET disabled_at = ?, disabled_reason = ? WHERE id = ?",
            arguments: [at, reason, record.endpointID.rawValue]
        )
        try failPending(record.endpointID, db: db)
        try Self.insert(
            [
                .webhook(
                    .webhookDisabled,
                    id: endpoint.id,
                    in: endpoint.environmentID,
                    at: record.at,
                    context: .system,
                    details: ["reason": reason]
                )
            ],
            db: db
        )
    }

    public func recordExpiringGraces(at date: Date) async throws -> Int {
        let horizon = date.addingTimeInterval(WebhookEventType.expiringNotice).keywayMilliseconds
        let pending = try await database.read { db in
            try Bool.fetchOne(
                db,
                sql: "SELECT 1 FROM secret_keys WHERE expiry_notice_pending = 1 AND revoked_at <= ? LIMIT 1",
                arguments: [horizon]
            ) != nil
        }
        guard pending else { return 0 }
        return try await database.write { db in
            let keys = try Row.fetchAll(
                db,
                sql: "SELECT * FROM secret_keys WHERE expiry_notice_pending = 1 AND revoked_at <= ?",
                arguments: [horizon]
            ).map(SecretKeyRecord.init(row:))
            var announced = 0
            for key in keys {
                try db.execute(sql: "UPDATE secret_keys SET expiry_notice_pending = 0 WHERE id = ?", arguments: [key.id.rawValue])
                // A grace already over is announced by its key.revoked, not as expiring.
                guard let end = key.revokedAt, end > date else { continue }
                try Self.enqueue(.keyExpiring(key, at: date), db: db)
                announced += 1
            }
            return announced
        }
    }

    public func deleteWebhookDeliveries(before date: Date) async throws -> Int {
        // A thousand rows a transaction: the one writer is never held for long by a large sweep.
        var deleted = 0
        while true {
            let batch = try await database.write { db in
                // Ids begin with their time: older than `date` is a range of each endpoint's key.
                try db.execute(
                    sql: """
                        DELETE FROM webhook_deliveries WHERE (endpoint_id, id) IN (
                            SELECT endpoint_id, id FROM webhook_deliveries
                            WHERE endpoint_id IN (SELECT id FROM webhook_endpoints) AND id < ? AND status <> 'pending' LIMIT 1000
                        )
                        """,
                    arguments: [WebhookDelivery.timePrefix(date)]
                )
                return db.changesCount
            }
            deleted += batch
            if batch < 1000 { return deleted }
        }
    }
}

extension WebhookEndpoint {
    init(row: Row) throws {
        guard let environment = Environment(rawValue: row["environment"]) else {
            throw SchemaError("A webhook endpoint names environment '\(row["environment"] as String)'.")
        }
        self.init(
            id: WebhookEndpointID(rawValue: row["id"]),
            environmentID: EnvironmentID(accountID: AccountID(rawValue: row["account_id"]), environment: environment),
            url: row["url"],
            events: WebhookEndpoint.events(stored: row["events"]),
            sealedSecret: row["sealed_secret"],
            sealedPreviousSecret: row["sealed_previous_secret"],
            previousSecretExpiresAt: (row["previous_secret_expires_at"] as Int64?).map(Date.init(keywayMilliseconds:)),
            createdAt: Date(keywayMilliseconds: row["created_at"]),
            disabledAt: (row["disabled_at"] as Int64?).map(Date.init(keywayMilliseconds:)),
            disabledReason: row["disabled_reason"],
            failingSince: (row["failing_since"] as Int64?).map(Date.init(keywayMilliseconds:)),
            lastFailureAt: (row["last_failure_at"] as Int64?).map(Date.init(keywayMilliseconds:))
        )
    }
}

extension WebhookDelivery {
    init(row: Row) throws {
        guard let type = WebhookEventType(rawValue: row["event_type"]), let status = WebhookDeliveryStatus(rawValue: row["status"]) else {
            throw SchemaError("A webhook delivery has the event '\(row["event_type"] as String)' or status this Keyway does not know.")
        }
        self.init(
            id: row["id"],
            endpointID: WebhookEndpointID(rawValue: row["endpoint_id"]),
            eventType: type,
            payload: row["payload"],
            createdAt: Date(keywayMilliseconds: row["created_at"]),
            status: status,
            attempts: row["attempts"],
            nextAttemptAt: (row["next_attempt_at"] as Int64?).map(Date.init(keywayMilliseconds:)),
            lastAttemptAt: (row["last_attempt_at"] as Int64?).map(Date.init(keywayMilliseconds:)),
            lastStatusCode: row["last_status_code"],
            lastError: row["last_error"]
        )
    }
}
