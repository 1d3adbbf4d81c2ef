public import Foundation
public import KeywayCore
import Logging
import PostgresNIO

/// Webhook endpoints and the outbox. Events are enqueued by the transaction of the change
/// they report (``enqueue(_:connection:logger:)``).
extension KeywayPostgresStore {
    /// The random part of a new delivery id, drawn by the server for each row an `INSERT … SELECT`
    /// writes, after ``WebhookDelivery/timePrefix(_:)``.
    static let randomDeliveryIDPart = "replace(gen_random_uuid()::text, '-', '')"

    static let endpointColumns = """
        id, account_id, environment, url, events, sealed_secret, sealed_previous_secret, previous_secret_expires_at, created_at,
        disabled_at, disabled_reason, failing_since, last_failure_at
        """
    typealias EndpointRow = (String, String, String, String, String, Data, Data?, Int64?, Int64, Int64?, String?, Int64?, Int64?)

    static let deliveryColumns = """
        id, endpoint_id, event_type, payload, created_at, status, attempts, next_attempt_at, last_attempt_at, last_status_code, last_error
        """
    typealias DeliveryRow = (String, String, String, String, Int64, String, Int32, Int64?, Int64?, Int32?, String?)

    /// Writes `event` to the outbox, once per enabled endpoint of its environment subscribed to
    /// it, on the caller's connection inside its transaction: one statement. `FOR KEY SHARE`: an
    /// endpoint being deleted meanwhile is waited for and then skipped, never a foreign-key error
    /// that would fail the change itself.
    static func enqueue(_ event: WebhookEvent, connection: PostgresConnection, logger: Logger) async throws {
        let now = Date().keywayMilliseconds
        try await connection.query(
            """
            INSERT INTO webhook_deliveries (id, endpoint_id, event_type, payload, created_at, status, attempts, next_attempt_at)
            SELECT \(WebhookDelivery.timePrefix(event.at)) || \(unescaped: randomDeliveryIDPart), id, \(event.type.rawValue),
                \(event.storedData), \(event.at.keywayMilliseconds), 'pending', 0, \(now)
            FROM webhook_endpoints
            WHERE account_id = \(event.environmentID.accountID.rawValue) AND environment = \(event.environmentID.environment.rawValue)
              AND disabled_at IS NULL AND position(\(event.type.subscriptionKey) in events) > 0
            FOR KEY SHARE
            """,
            logger: logger
        )
    }

    public func insertWebhookEndpoint(_ endpoint: WebhookEndpoint, limit: Int, audit: AuditContext) async throws {
        let account = endpoint.environmentID.accountID.rawValue
        let environment = endpoint.environmentID.environment.rawValue
        try await transaction { connection in
            // The count must see what the additions before it committed, whatever the default isolation.
            try await connection.query("SET TRANSACTION ISOLATION LEVEL READ COMMITTED", logger: logger)
            // The environment's row, locked: racing additions are counted one after the other.
            let found = try await connection.query(
                "SELECT 1 FROM environments WHERE account_id = \(account) AND name = \(environment) FOR UPDATE",
                logger: logger
            ).decode(Int32.self)
            var exists = false
            for try await _ in found { exists = true }
            guard exists else { throw KeywayError.accountNotFound(endpoint.environmentID.accountID) }
            var count: Int64 = 0
            for try await value in try await connection.query(
                "SELECT count(*) FROM webhook_endpoints WHERE account_id = \(account) AND environment = \(environment)",
                logger: logger
            ).decode(Int64.self) {
                count = value
            }
            guard count < limit else { throw KeywayError.tooManyWebhookEndpoints(limit: limit) }
            var duplicate = false
            for try await _ in try await connection.query(
                "SELECT 1 FROM webhook_endpoints WHERE account_id = \(account) AND environment = \(environment) AND url = \(endpoint.url)",
                logger: logger
            ).decode(Int32.self) {
                duplicate = true
            }
            guard !duplicate else { throw KeywayError.duplicateWebhookURL }
            try await connection.query(
                """
                INSERT INTO webhook_endpoints (id, account_id, environment, url, events, sealed_secret, created_at)
                VALUES (\(endpoint.id.rawValue), \(account), \(environment), \(endpoint.url), \(endpoint.storedEvents),
                        \(endpoint.sealedSecret), \(endpoint.createdAt.keywayMilliseconds))
                """,
                logger: logger
            )
            try await Self.insert(
                [
                    .webhook(
                        .webhookCreated,
                        id: endpoint.id,
                        in: endpoint.environmentID,
                        at: endpoint.createdAt,
                        context: audit,
                        details: ["url": endpoint.url, "events": endpoint.events.sorted().map(\.rawValue).joined(separator: " ")]
                    )
                ],
                connection: connection,
                logger: logger
            )
        }
    }

    public func webhookEndpoints(for accountID: AccountID) async throws -> [WebhookEndpoint] {
        try await all(
            "SELECT \(unescaped: Self.endpointColumns) FROM webhook_endpoints WHERE account_id = \(accountID.rawValue) ORDER BY created_at, id",
            as: EndpointRow.self
        ).map(Self.endpoint)
    }

    public func webhookEndpoint(_ id: WebhookEndpointID, in accountID: AccountID) async throws -> WebhookEndpoint? {
        try await first(
            "SELECT \(unescaped: Self.endpointColumns) FROM webhook_endpoints WHERE id = \(id.rawValue) AND account_id = \(accountID.rawValue)",
            as: EndpointRow.self
        ).map(Self.endpoint)
    }

    /// The endpoint, locked for the rest of the caller's transaction.
    private func lockedEndpoint(_ id: WebhookEndpointID, in accountID: AccountID, connection: PostgresConnection) async throws -> WebhookEndpoint? {
        let rows = try await connection.query(
            """
            SELECT \(unescaped: Self.endpointColumns) FROM webhook_endpoints
            WHERE id = \(id.rawValue) AND account_id = \(accountID.rawValue) FOR UPDATE
            """,
            logger: logger
        ).decode(EndpointRow.self)
        for try await row in rows { return try Self.endpoint(row) }
        return nil
    }

    public func updateWebhookEndpoint(
        _ id: WebhookEndpointID,
        in accountID: AccountID,
        events: Set<WebhookEventType>?,
        enabled: Bool?,
        audit: AuditContext,
        at date: Date
    ) async throws -> WebhookEndpoint? {
        try await transaction { connection in
            guard let found = try await lockedEndpoint(id, in: accountID, connection: connection) else { return nil }
            let (endpoint, details) = found.changed(events: events, enabled: enabled, by: audit.actor, at: date)
            try await connection.query(
                """
                UPDATE webhook_endpoints SET events = \(endpoint.storedEvents), disabled_at = \(endpoint.disabledAt?.keywayMilliseconds),
                    disabled_reason = \(endpoint.disabledReason), failing_since = \(endpoint.failingSince?.keywayMilliseconds)
                WHERE id = \(id.rawValue)
                """,
                logger: logger
            )
            if enabled == false {
                try await connection.query(Self.failPending(id), logger: logger)
            }
            try await Self.insert(
                [.webhook(.webhookUpdated, id: id, in: endpoint.environmentID, at: date, context: audit, details: details)],
                connection: connection,
                logger: logger
            )
            return endpoint
        }
    }

    public func rotateWebhookSecret(
        _ id: WebhookEndpointID,
        in accountID: AccountID,
        sealedSecret: Data,
        previousExpiresAt: Date,
        audit: AuditContext,
        at date: Date
    ) async throws -> Bool {
        try await transaction { connection in
            guard let endpoint = try await lockedEndpoint(id, in: accountID, connection: connection) else { return false }
            try await connection.query(
                """
                UPDATE webhook_endpoints SET sealed_previous_secret = sealed_secret,
                    previous_secret_expires_at = \(previousExpiresAt.keywayMilliseconds), sealed_secret = \(sealedSecret)
                WHERE id = \(id.rawValue)
                """,
                logger: logger
            )
            try await Self.insert(
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
                connection: connection,
                logger: logger
            )
            return true
        }
    }

    public func deleteWebhookEndpoint(_ id: WebhookEndpointID, in accountID: AccountID, audit: AuditContext, at date: Date) async throws -> Bool {
        try await transaction { connection in
            guard let endpoint = try await lockedEndpoint(id, in: accountID, connection: connection) else { return false }
            try await connection.query("DELETE FROM webhook_endpoints WHERE id = \(id.rawValue)", logger: logger)
            try await Self.insert(
                [.webhook(.webhookDeleted, id: id, in: endpoint.environmentID, at: date, context: audit, details: ["url": endpoint.url])],
                connection: connection,
                logger: logger
            )
            return true
        }
    }

    /// Fails a disabled endpoint's waiting deliveries, and drops their claims: an attempt in
    /// flight records nothing over it.
    static func failPending(_ endpoint: WebhookEndpointID) -> PostgresQuery {
        """
        UPDATE webhook_deliveries SET status = 'failed', next_attempt_at = NULL, claim = NULL, claimed_until = NULL,
            last_error = COALESCE(last_error, 'The endpoint was disabled.')
        WHERE endpoint_id = \(endpoint.rawValue) AND status = 'pending'
        """
    }

    public func webhookDeliveries(for accountID: AccountID, endpoint: WebhookEndpointID?, limit: Int) async throws -> [WebhookDelivery] {
        // Each endpoint's newest (one range of its index), then the newest of those: never a sort
        // of everything the account was ever sent.
        try await all(
            """
            SELECT d.* FROM webhook_endpoints AS e
            CROSS JOIN LATERAL (
                SELECT \(unescaped: Self.deliveryColumns) FROM webhook_deliveries
                WHERE endpoint_id = e.id ORDER BY created_at DESC, id DESC LIMIT \(limit)
            ) AS d
            WHERE e.account_id = \(accountID.rawValue) AND (\(endpoint?.rawValue)::text IS NULL OR e.id = \(endpoint?.rawValue))
            ORDER BY d.created_at DESC, d.id DESC LIMIT \(limit)
            """,
            as: DeliveryRow.self
        ).map(Self.delivery)
    }

    public func resendWebhookDelivery(_ id: String, in accountID: AccountID, environment: Environment?, at date: Date) async throws -> Bool {
        try await first(
            """
            UPDATE webhook_deliveries
            SET status = 'pending', next_attempt_at = \(date.keywayMilliseconds), attempts = 0, claim = NULL, claimed_until = NULL
            WHERE id = \(id)
              AND endpoint_id IN (
                  SELECT id FROM webhook_endpoints
                  WHERE account_id = \(accountID.rawValue) AND disabled_at IS NULL
                    AND (\(environment?.rawValue)::text IS NULL OR environment = \(environment?.rawValue))
              )
              AND (claimed_until IS NULL OR claimed_until <= \(date.keywayMilliseconds))
            RETURNING 1
            """,
            as: Int32.self
        ) != nil
    }

    public func claimWebhookDeliveries(
        at date: Date,
        lease: TimeInterval,
        limit: Int,
        perEndpoint: Int,
        excluding: Set<WebhookEndpointID>
    ) async throws -> [ClaimedWebhookDelivery] {
        let now = date.keywayMilliseconds
        let excluded = excluding.map(\.rawValue)
        let claim = WebhookDelivery.newID()
        // Each endpoint with pending deliveries is found by skipping along the due index (one
        // search per endpoint, however long its backlog); excluded and disabled ones are left out
        // before their deliveries are read. Of the rest, only the `limit` whose oldest due delivery
        // is oldest can give one of the `limit` due longest, so only theirs are locked, at most
        // `perEndpoint` each. SKIP LOCKED: instances claiming at once take disjoint rows; the
        // claim, committed with the statement, keeps the rows from the others until the lease ends.
        let deliveries = try await all(
            """
            WITH RECURSIVE pending(endpoint_id) AS (
                SELECT (SELECT endpoint_id FROM webhook_deliveries WHERE status = 'pending' ORDER BY endpoint_id LIMIT 1)
                UNION ALL
                SELECT (
                    SELECT d.endpoint_id FROM webhook_deliveries AS d
                    WHERE d.status = 'pending' AND d.endpoint_id > p.endpoint_id ORDER BY d.endpoint_id LIMIT 1
                )
                FROM pending AS p WHERE p.endpoint_id IS NOT NULL
            ),
            heads AS (
                SELECT pending.endpoint_id, (
                    SELECT d.next_attempt_at FROM webhook_deliveries AS d
                    WHERE d.endpoint_id = pending.endpoint_id AND d.status = 'pending' AND d.next_attempt_at <= \(now)
                      AND (d.claimed_until IS NULL OR d.claimed_until <= \(now))
                    ORDER BY d.next_attempt_at LIMIT 1
                ) AS oldest
                FROM pending JOIN webhook_endpoints AS e ON e.id = pending.endpoint_id AND e.disabled_at IS NULL
                WHERE pending.endpoint_id <> ALL(\(excluded)::text[])
            ),
            picked AS MATERIALIZED (
                SELECT due.id AS picked_id FROM (SELECT endpoint_id FROM heads WHERE oldest IS NOT NULL ORDER BY oldest LIMIT \(limit)) AS chosen
                CROSS JOIN LATERAL (
                    SELECT d.id, d.next_attempt_at FROM webhook_deliveries AS d
                    WHERE d.endpoint_id = chosen.endpoint_id AND d.status = 'pending' AND d.next_attempt_at <= \(now)
                      AND (d.claimed_until IS NULL OR d.claimed_until <= \(now))
                    ORDER BY d.next_attempt_at LIMIT \(perEndpoint)
                    FOR UPDATE OF d SKIP LOCKED
                ) AS due
                ORDER BY due.next_attempt_at LIMIT \(limit)
            )
            UPDATE webhook_deliveries SET claim = \(claim), claimed_until = \(now + Int64(lease * 1000))
            FROM picked WHERE webhook_deliveries.id = picked.picked_id
            RETURNING \(unescaped: Self.deliveryColumns)
            """,
            as: DeliveryRow.self
        ).map(Self.delivery)
        guard !deliveries.isEmpty else { return [] }
        let ids = Array(Set(deliveries.map(\.endpointID.rawValue)))
        let endpoints = try await all(
            "SELECT \(unescaped: Self.endpointColumns) FROM webhook_endpoints WHERE id = ANY(\(ids))",
            as: EndpointRow.self
        ).map(Self.endpoint)
        let byID = Dictionary(uniqueKeysWithValues: endpoints.map { ($0.id, $0) })
        return deliveries.compactMap { delivery in
            byID[delivery.endpointID].map { ClaimedWebhookDelivery(delivery: delivery, endpoint: $0, claim: claim) }
        }
    }

    public func recordWebhookAttempt(_ record: WebhookAttemptRecord) async throws {
        let (status, next): (String, Int64?) =
            switch record.next {
            case .succeeded: ("succeeded", nil)
            case .retry(let date): ("pending", date.keywayMilliseconds)
            case .failed: ("failed", nil)
            }
        let at = record.at.keywayMilliseconds
        let succeeded = status == "succeeded"
        // A failure more than a day after the last one starts a new streak (see `failureStreak`).
        let streakStart = at - Int64(WebhookRetrySchedule.longestWait * 1000)
        try await transaction { connection in
            let updated = try await connection.query(
                """
                UPDATE webhook_deliveries SET status = \(status), next_attempt_at = \(next), attempts = attempts + 1,
                    last_attempt_at = \(at), last_status_code = \(record.statusCode.map(Int32.init)), last_error = \(record.error),
                    claim = NULL, claimed_until = NULL
                WHERE id = \(record.deliveryID) AND claim = \(record.claim)
                RETURNING 1
                """,
                logger: logger
            ).decode(Int32.self)
            var recorded = false
            for try await _ in updated { recorded = true }
            // A claim that lapsed (another instance took the delivery) records nothing.
            guard recorded else { return }
            try await connection.query(
                """
                UPDATE webhook_endpoints
                SET failing_since = CASE
                        WHEN \(succeeded) THEN NULL
                        WHEN failing_since IS NULL OR last_failure_at IS NULL OR last_failure_at < \(streakStart) THEN \(at)
                        ELSE failing_since END,
                    last_failure_at = CASE WHEN \(succeeded) THEN last_failure_at ELSE \(at) END
                WHERE id = \(record.endpointID.rawValue) AND (NOT \(succeeded) OR failing_since IS NOT NULL)
                """,
                logger: logger
            )
            guard let reason = record.disableEndpoint else { return }
            let disabled = try await connection.query(
                """
                UPDATE webhook_endpoints SET disabled_at = \(at), disabled_reason = \(reason)
                WHERE id = \(record.endpointID.rawValue) AND disabled_at IS NULL
                RETURNING account_id, environment
                """,
                logger: logger
            ).decode((String, String).self)
            var environmentID: EnvironmentID?
            for try await (account, environment) in disabled {
                environmentID = EnvironmentID(accountID: AccountID(rawValue: account), environment: try Self.environment(environment))
            }
            guard let environmentID else { return }
            try await connection.query(Self.failPending(record.endpointID), logger: logger)
            try await Self.insert(
                [.webhook(.webhookDisabled, id: record.endpointID, in: environmentID, at: record.at, context: .system, details: ["reason": reason])],
                connection: connection,
                logger: logger
            )
        }
    }

    public func recordExpiringGraces(at date: Date) async throws -> Int {
        let horizon = date.addingTimeInterval(WebhookEventType.expiringNotice).keywayMilliseconds
        // Asked every second by every instance: one indexed read, the transaction only when needed.
        guard
            try await first(
                "SELECT 1 FROM secret_keys WHERE expiry_notice_pending AND revoked_at <= \(horizon) LIMIT 1",
                as: Int32.self
            ) != nil
        else { return 0 }
        return try await transaction { connection in
            // The update claims each key once, whichever instance runs first; the others find nothing.
            let rows = try await connection.query(
                """
                UPDATE secret_keys SET expiry_notice_pending = false
                WHERE expiry_notice_pending AND revoked_at <= \(horizon)
                RETURNING \(unescaped: Self.keyColumns)
                """,
                logger: logger
            ).decode(KeyRow.self)
            var keys: [SecretKeyRecord] = []
            for try await row in rows { keys.append(try Self.record(row)) }
            var announced = 0
            // A grace already over is announced by its key.revoked, not as expiring.
            for key in keys where (key.revokedAt ?? date) > date {
                try await Self.enqueue(.keyExpiring(key, at: date), connection: connection, logger: logger)
                announced += 1
            }
            return announced
        }
    }

    public func deleteWebhookDeliveries(before date: Date) async throws -> Int {
        try await first(
            """
            WITH deleted AS (
                DELETE FROM webhook_deliveries
                WHERE endpoint_id IN (SELECT id FROM webhook_endpoints) AND created_at < \(date.keywayMilliseconds) AND status <> 'pending'
                RETURNING 1
            )
            SELECT count(*) FROM deleted
            """,
            as: Int64.self
        )
        .map(Int.init) ?? 0
    }

    static func endpoint(_ row: EndpointRow) throws -> WebhookEndpoint {
        WebhookEndpoint(
            id: WebhookEndpointID(rawValue: row.0),
            environmentID: EnvironmentID(accountID: AccountID(rawValue: row.1), environment: try environment(row.2)),
            url: row.3,
            events: WebhookEndpoint.events(stored: row.4),
            sealedSecret: row.5,
            sealedPreviousSecret: row.6,
            previousSecretExpiresAt: row.7.map(Date.init(keywayMilliseconds:)),
            createdAt: Date(keywayMilliseconds: row.8),
            disabledAt: row.9.map(Date.init(keywayMilliseconds:)),
            disabledReason: row.10,
            failingSince: row.11.map(Date.init(keywayMilliseconds:)),
            lastFailureAt: row.12.map(Date.init(keywayMilliseconds:))
        )
    }

    static func delivery(_ row: DeliveryRow) throws -> WebhookDelivery {
        guard let type = WebhookEventType(rawValue: row.2), let status = WebhookDeliveryStatus(rawValue: row.5) else {
            throw SchemaError("A webhook delivery has the event '\(row.2)' or status '\(row.5)', which this Keyway does not know.")
        }
        return WebhookDelivery(
            id: row.0,
            endpointID: WebhookEndpointID(rawValue: row.1),
            eventType: type,
            payload: row.3,
            createdAt: Date(keywayMilliseconds: row.4),
            status: status,
            attempts: Int(row.6),
            nextAttemptAt: row.7.map(Date.init(keywayMilliseconds:)),
            lastAttemptAt: row.8.map(Date.init(keywayMilliseconds:)),
            lastStatusCode: row.9.map(Int.init),
            lastError: row.10
        )
    }
}
