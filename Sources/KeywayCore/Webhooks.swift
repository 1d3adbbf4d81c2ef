public import Crypto
public import Foundation

/// What an account's webhook endpoints can subscribe to.
public enum WebhookEventType: String, Sendable, Hashable, CaseIterable, Codable, Comparable {
    case keyGenerated = "key.generated"
    /// A key was rolled: it works until `graceEndsAt`.
    case keyRolled = "key.rolled"
    /// A key stopped working: regenerated, revoked, or its grace ended (`revocationReason`).
    case keyRevoked = "key.revoked"
    /// A rolled key's grace ends within the hour (sent once, an hour before, or at the roll if shorter).
    case keyExpiring = "key.expiring"
    /// A key was reported leaked and revoked.
    case keyLeaked = "key.leaked"
    case userCreated = "user.created"
    case userUpdated = "user.updated"
    case userDeleted = "user.deleted"
    case signingKeyRotated = "signing_key.rotated"

    public static func < (lhs: Self, rhs: Self) -> Bool { lhs.rawValue < rhs.rawValue }

    /// How an endpoint's stored events (``WebhookEndpoint/storedEvents``) contain this type.
    public var subscriptionKey: String { "," + rawValue + "," }

    /// How long before a grace ends `key.expiring` is sent.
    public static let expiringNotice: TimeInterval = 3600
}

/// One event as every endpoint receives it: `{"type", "timestamp", "data"}`, written to the
/// outbox in the transaction of the change it reports. Never a key or a secret: keys are named
/// by id, hint and SHA-256 (`hashedToken`), as the audit log names them.
public struct WebhookEvent: Sendable, Hashable {
    public var type: WebhookEventType
    public var environmentID: EnvironmentID
    public var at: Date
    /// The `data` object's fields, in order; `nil` is written as JSON `null`.
    public var data: [(String, String?)]

    public init(type: WebhookEventType, environmentID: EnvironmentID, at: Date, data: [(String, String?)]) {
        self.type = type
        self.environmentID = environmentID
        self.at = at.keywayPrecision
        self.data = data
    }

    public static func == (lhs: Self, rhs: Self) -> Bool { lhs.payload == rhs.payload }
    public func hash(into hasher: inout Hasher) { hasher.combine(payload) }

    /// The body every delivery of the event sends, byte for byte.
    public var payload: String {
        Self.body(type: type, at: at, environmentID: environmentID, storedData: storedData)
    }

    /// What the outbox keeps of the body: the `data` fields after `accountId` and `environment`.
    /// The rest comes back from the delivery's row (type, time) and its endpoint (account,
    /// environment): fewer bytes in the commit every change with a subscriber shares.
    public var storedData: String {
        // Bytes, not string appends: made for every user created with an endpoint subscribed.
        var json = [UInt8]()
        json.reserveCapacity(200)
        for (index, (name, value)) in data.enumerated() {
            if index > 0 { json.append(UInt8(ascii: ",")) }
            json.appendJSONString(name)
            json.append(UInt8(ascii: ":"))
            if let value { json.appendJSONString(value) } else { json.append(contentsOf: "null".utf8) }
        }
        return String(decoding: json, as: UTF8.self)
    }

    /// `{"type","timestamp","data":{"accountId","environment",…}}` around ``storedData``.
    public static func body(type: WebhookEventType, at date: Date, environmentID: EnvironmentID, storedData: String) -> String {
        var json = [UInt8]()
        json.reserveCapacity(storedData.utf8.count + 160)
        json.append(contentsOf: #"{"type":"#.utf8)
        json.appendJSONString(type.rawValue)
        json.append(contentsOf: #","timestamp":"#.utf8)
        json.appendJSONString(date.keywayTimestamp)
        json.append(contentsOf: #","data":{"accountId":"#.utf8)
        json.appendJSONString(environmentID.accountID.rawValue)
        json.append(contentsOf: #","environment":"#.utf8)
        json.appendJSONString(environmentID.environment.rawValue)
        if !storedData.isEmpty {
            json.append(UInt8(ascii: ","))
            json.append(contentsOf: storedData.utf8)
        }
        json.append(contentsOf: "}}".utf8)
        return String(decoding: json, as: UTF8.self)
    }

    /// The event an audit entry's change sends, if any: key and signing-key events.
    public init?(_ entry: AuditEntry) {
        guard let accountID = entry.accountID, let environment = entry.environment else { return nil }
        let type: WebhookEventType
        switch entry.event {
        case .keyGenerated: type = .keyGenerated
        case .keyRolled: type = .keyRolled
        case .keyRevoked, .keyExpired: type = .keyRevoked
        case .keyReportedLeaked: type = .keyLeaked
        case .signingKeyRotated: type = .signingKeyRotated
        default: return nil
        }
        var data: [(String, String?)]
        if entry.event == .signingKeyRotated {
            data = [("signingKeyId", entry.resourceID)]
        } else {
            data = [("keyId", entry.resourceID), ("keyHint", entry.resourceHint), ("hashedToken", entry.hashedToken)]
        }
        data.append(("actor", entry.actor))
        for name in entry.details.keys.sorted() { data.append((name, entry.details[name])) }
        self.init(type: type, environmentID: EnvironmentID(accountID: accountID, environment: environment), at: entry.at, data: data)
    }

    /// `user.created`, `user.updated` or `user.deleted`, with the user as it is (or was).
    public static func user(_ type: WebhookEventType, _ user: User, in environmentID: EnvironmentID, at date: Date) -> WebhookEvent {
        WebhookEvent(
            type: type,
            environmentID: environmentID,
            at: date,
            data: [
                ("userId", user.id.rawValue), ("username", user.username), ("fullName", user.fullName),
                ("createdAt", user.createdAt.auditTimestamp),
            ]
        )
    }

    /// `key.expiring`: the rolled key's grace ends at `record.revokedAt`.
    public static func keyExpiring(_ record: SecretKeyRecord, at date: Date) -> WebhookEvent {
        WebhookEvent(
            type: .keyExpiring,
            environmentID: record.environmentID,
            at: date,
            data: [
                ("keyId", record.id.rawValue), ("keyHint", record.hint), ("hashedToken", record.digest.base64),
                ("expiresAt", (record.revokedAt ?? date).auditTimestamp),
            ]
        )
    }
}

extension [UInt8] {
    /// Appends `value` as a JSON string: quotes, backslashes and control characters escaped,
    /// everything else (non-ASCII included) as its UTF-8.
    mutating func appendJSONString(_ value: String) {
        append(UInt8(ascii: "\""))
        for byte in value.utf8 {
            switch byte {
            case UInt8(ascii: "\""): append(contentsOf: #"\""#.utf8)
            case UInt8(ascii: "\\"): append(contentsOf: #"\\"#.utf8)
            case 0x0A: append(contentsOf: #"\n"#.utf8)
            case 0x0D: append(contentsOf: #"\r"#.utf8)
            case 0x09: append(contentsOf: #"\t"#.utf8)
            case 0..<0x20:
                let hex: [UInt8] = Array("0123456789abcdef".utf8)
                append(contentsOf: #"\u00"#.utf8)
                append(hex[Int(byte >> 4)])
                append(hex[Int(byte & 0x0F)])
            default: append(byte)
            }
        }
        append(UInt8(ascii: "\""))
    }
}

/// Identifies a webhook endpoint: `we_` and 20 base62 characters.
public struct WebhookEndpointID: RawRepresentable, Sendable, Hashable, Codable, CustomStringConvertible {
    public let rawValue: String
    public init(rawValue: String) { self.rawValue = rawValue }
    public static func generate() -> WebhookEndpointID { WebhookEndpointID(rawValue: "we_" + Base62.randomString(length: 20)) }
    public var description: String { rawValue }
}

/// Where an environment's events are sent, and what signs them.
public struct WebhookEndpoint: Sendable, Hashable {
    public var id: WebhookEndpointID
    public var environmentID: EnvironmentID
    public var url: String
    public var events: Set<WebhookEventType>
    /// The signing secret's 32 bytes, sealed (AES-GCM) under the master key.
    public var sealedSecret: Data
    /// The secret a rotation replaced, sealed; deliveries are signed with it too until `previousSecretExpiresAt`.
    public var sealedPreviousSecret: Data?
    public var previousSecretExpiresAt: Date?
    public var createdAt: Date
    /// When deliveries stopped: a 410 answer, five days of failures, or the owner.
    public var disabledAt: Date?
    public var disabledReason: String?
    /// Since when every attempt has failed; `nil` after a success.
    public var failingSince: Date?
    /// When the last attempt failed: a failure a day after the last one starts a new streak.
    public var lastFailureAt: Date?

    public init(
        id: WebhookEndpointID,
        environmentID: EnvironmentID,
        url: String,
        events: Set<WebhookEventType>,
        sealedSecret: Data,
        sealedPreviousSecret: Data? = nil,
        previousSecretExpiresAt: Date? = nil,
        createdAt: Date,
        disabledAt: Date? = nil,
        disabledReason: String? = nil,
        failingSince: Date? = nil,
        lastFailureAt: Date? = nil
    ) {
        self.id = id
        self.environmentID = environmentID
        self.url = url
        self.events = events
        self.sealedSecret = sealedSecret
        self.sealedPreviousSecret = sealedPreviousSecret
        self.previousSecretExpiresAt = previousSecretExpiresAt.map(\.keywayPrecision)
        self.createdAt = createdAt.keywayPrecision
        self.disabledAt = disabledAt.map(\.keywayPrecision)
        self.disabledReason = disabledReason
        self.failingSince = failingSince.map(\.keywayPrecision)
        self.lastFailureAt = lastFailureAt.map(\.keywayPrecision)
    }

    /// Since when the endpoint has failed, counting an attempt failing at `date`: its streak goes
    /// on unless the last failure is more than a day old (longer than any wait between retries,
    /// so the endpoint was not being tried, not failing, in between).
    public func failureStreak(failingAt date: Date) -> Date {
        guard let since = failingSince, let last = lastFailureAt, date.timeIntervalSince(last) <= WebhookRetrySchedule.longestWait else {
            return date
        }
        return since
    }

    /// The endpoint as an owner's change leaves it — `events` replaced, enabled (its failure
    /// forgotten) or disabled — and the details its `webhook.updated` entry records.
    public func changed(events: Set<WebhookEventType>?, enabled: Bool?, by actor: String, at date: Date) -> (WebhookEndpoint, [String: String]) {
        var endpoint = self
        var details: [String: String] = [:]
        if let events {
            endpoint.events = events
            details["events"] = events.sorted().map(\.rawValue).joined(separator: " ")
        }
        if let enabled {
            endpoint.disabledAt = enabled ? nil : (disabledAt ?? date.keywayPrecision)
            endpoint.disabledReason = enabled ? nil : (disabledReason ?? "Disabled by \(actor).")
            endpoint.failingSince = enabled ? nil : failingSince
            details["enabled"] = String(enabled)
        }
        return (endpoint, details)
    }

    /// How a store keeps `events`: sorted, comma-separated, with a comma at each end so
    /// `,type,` finds one by substring.
    public var storedEvents: String { "," + events.sorted().map(\.rawValue).joined(separator: ",") + "," }

    /// Reads ``storedEvents`` back; unknown names (a newer Keyway's) are skipped.
    public static func events(stored: String) -> Set<WebhookEventType> {
        Set(stored.split(separator: ",").compactMap { WebhookEventType(rawValue: String($0)) })
    }
}

/// Where a delivery stands.
public enum WebhookDeliveryStatus: String, Sendable, Hashable, Codable {
    /// Waiting for its first attempt or a retry.
    case pending
    case succeeded
    /// Out of retries, or its endpoint was disabled.
    case failed
}

/// One event on its way to one endpoint: a row of the outbox. Its id is the `webhook-id`
/// every attempt sends, so a receiver can drop repeats.
public struct WebhookDelivery: Sendable, Hashable {
    /// `msg_`, the creation time (8 base62 characters, milliseconds) and 16 random base62
    /// characters: ordered by time, so the outbox's index grows at one end.
    public var id: String
    public var endpointID: WebhookEndpointID
    public var eventType: WebhookEventType
    /// The body's `data` fields after `accountId` and `environment` (``WebhookEvent/storedData``);
    /// ``body(for:)`` is what is sent.
    public var payload: String
    /// When the event happened: the body's `timestamp`.
    public var createdAt: Date
    public var status: WebhookDeliveryStatus
    public var attempts: Int
    /// When the next attempt is due; `nil` once it succeeded or failed.
    public var nextAttemptAt: Date?
    public var lastAttemptAt: Date?
    /// The last answer's HTTP status; `nil` when none came.
    public var lastStatusCode: Int?
    /// Why the last attempt failed without an answer (timeout, refused address…).
    public var lastError: String?

    public init(
        id: String,
        endpointID: WebhookEndpointID,
        eventType: WebhookEventType,
        payload: String,
        createdAt: Date,
        status: WebhookDeliveryStatus,
        attempts: Int,
        nextAttemptAt: Date?,
        lastAttemptAt: Date?,
        lastStatusCode: Int?,
        lastError: String?
    ) {
        self.id = id
        self.endpointID = endpointID
        self.eventType = eventType
        self.payload = payload
        self.createdAt = createdAt
        self.status = status
        self.attempts = attempts
        self.nextAttemptAt = nextAttemptAt
        self.lastAttemptAt = lastAttemptAt
        self.lastStatusCode = lastStatusCode
        self.lastError = lastError
    }

    /// The body sent to `endpoint`, byte for byte the event's ``WebhookEvent/payload``.
    public func body(for endpoint: WebhookEndpoint) -> String {
        WebhookEvent.body(type: eventType, at: createdAt, environmentID: endpoint.environmentID, storedData: payload)
    }

    /// A new delivery id for `date`.
    public static func newID(at date: Date = Date()) -> String {
        timePrefix(date) + Base62.randomString(length: 16)
    }

    /// `msg_` and the time, the part of an id that orders it (PostgreSQL adds its own random part).
    public static func timePrefix(_ date: Date) -> String {
        "msg_" + String(decoding: Base62.encode(UInt64(max(0, date.keywayMilliseconds)), width: 8), as: UTF8.self)
    }
}

/// A delivery one process has claimed, with what it needs to send it.
public struct ClaimedWebhookDelivery: Sendable {
    public var delivery: WebhookDelivery
    public var endpoint: WebhookEndpoint
    /// The claim's token: the result is recorded only while the claim is still this one.
    public var claim: String

    public init(delivery: WebhookDelivery, endpoint: WebhookEndpoint, claim: String) {
        self.delivery = delivery
        self.endpoint = endpoint
        self.claim = claim
    }
}

/// What one attempt did, for the store to record.
public struct WebhookAttemptRecord: Sendable, Hashable {
    public enum Next: Sendable, Hashable {
        case succeeded
        case retry(at: Date)
        /// No attempt is left, or the endpoint is disabled.
        case failed
    }

    public var deliveryID: String
    public var endpointID: WebhookEndpointID
    public var claim: String
    public var at: Date
    public var statusCode: Int?
    public var error: String?
    public var next: Next
    /// Set when the endpoint must stop receiving: why (410, five days of failures).
    public var disableEndpoint: String?

    public init(
        deliveryID: String,
        endpointID: WebhookEndpointID,
        claim: String,
        at: Date,
        statusCode: Int?,
        error: String?,
        next: Next,
        disableEndpoint: String?
    ) {
        self.deliveryID = deliveryID
        self.endpointID = endpointID
        self.claim = claim
        self.at = at.keywayPrecision
        self.statusCode = statusCode
        self.error = error
        self.next = next
        self.disableEndpoint = disableEndpoint
    }
}

/// The endpoints and the outbox. Events are written by the transaction of the change they
/// report (the other stores' methods); these manage endpoints and move deliveries along.
public protocol WebhookStore: Sendable {
    /// Adds an endpoint unless the environment has `limit` already (counted in the same
    /// transaction) or one with its URL, recorded (`webhook.created`) in the same transaction.
    /// - Throws: ``KeywayError`` `too_many_webhook_endpoints`, `account_not_found`, `invalid_input` (a duplicate URL).
    func insertWebhookEndpoint(_ endpoint: WebhookEndpoint, limit: Int, audit: AuditContext) async throws
    /// An account's endpoints, both environments, oldest first.
    func webhookEndpoints(for accountID: AccountID) async throws -> [WebhookEndpoint]
    func webhookEndpoint(_ id: WebhookEndpointID, in accountID: AccountID) async throws -> WebhookEndpoint?
    /// Changes an endpoint's events, and enables (clearing its failure) or disables it; disabling
    /// fails its waiting deliveries, as Keyway's own disabling does.
    /// Recorded (`webhook.updated`). - Returns: The endpoint as changed, `nil` when not found.
    func updateWebhookEndpoint(
        _ id: WebhookEndpointID,
        in accountID: AccountID,
        events: Set<WebhookEventType>?,
        enabled: Bool?,
        audit: AuditContext,
        at date: Date
    ) async throws -> WebhookEndpoint?
    /// Replaces the signing secret, keeping the current one as previous until `previousExpiresAt`.
    /// Recorded (`webhook.secret_rotated`). - Returns: `false` when not found.
    func rotateWebhookSecret(
        _ id: WebhookEndpointID,
        in accountID: AccountID,
        sealedSecret: Data,
        previousExpiresAt: Date,
        audit: AuditContext,
        at date: Date
    ) async throws -> Bool
    /// Deletes an endpoint and its deliveries. Recorded (`webhook.deleted`).
    func deleteWebhookEndpoint(_ id: WebhookEndpointID, in accountID: AccountID, audit: AuditContext, at date: Date) async throws -> Bool
    /// An account's deliveries (one endpoint's with `endpoint`), newest first.
    func webhookDeliveries(for accountID: AccountID, endpoint: WebhookEndpointID?, limit: Int) async throws -> [WebhookDelivery]
    /// Makes a delivery pending again, due at `date`, with a whole new retry schedule (its
    /// attempts count from zero), whatever its status — not while it is claimed (an attempt is in
    /// flight), nor when its endpoint is disabled.
    /// - Parameter environment: Only a delivery of this environment's endpoints; any when `nil`.
    /// - Returns: `false` when the account (or the environment) has no such delivery, its endpoint
    ///   is disabled, or it is claimed.
    func resendWebhookDelivery(_ id: String, in accountID: AccountID, environment: Environment?, at date: Date) async throws -> Bool

    /// Claims up to `limit` due deliveries of enabled endpoints for `lease`, oldest due first: no
    /// other process takes them until the lease ends (PostgreSQL: `FOR UPDATE SKIP LOCKED`).
    /// - Parameters:
    ///   - perEndpoint: At most this many of one endpoint's deliveries: a backlog at one endpoint
    ///     leaves room in the claim for the others.
    ///   - excluding: Endpoints to take nothing of (the caller has as many of theirs in flight as it allows).
    func claimWebhookDeliveries(
        at date: Date,
        lease: TimeInterval,
        limit: Int,
        perEndpoint: Int,
        excluding: Set<WebhookEndpointID>
    ) async throws -> [ClaimedWebhookDelivery]
    /// Records an attempt, if the claim is still the caller's; disables the endpoint (failing its
    /// pending deliveries, with a `webhook.disabled` entry) when the record says so.
    func recordWebhookAttempt(_ record: WebhookAttemptRecord) async throws
    /// Writes `key.expiring` for each key whose grace ends within ``WebhookEventType/expiringNotice``
    /// of `date`, once per key however many instances ask.
    /// - Returns: How many keys were announced.
    func recordExpiringGraces(at date: Date) async throws -> Int
    /// Deletes finished deliveries created before `date`.
    func deleteWebhookDeliveries(before date: Date) async throws -> Int
}

/// A store that hands every ``WebhookStore`` call to another: for decorators that change some
/// other aggregate's behaviour (the tests' counting and unwatched stores).
public protocol ForwardingWebhookStore: WebhookStore {
    var webhookStore: any WebhookStore { get }
}

extension ForwardingWebhookStore {
    public func insertWebhookEndpoint(_ endpoint: WebhookEndpoint, limit: Int, audit: AuditContext) async throws {
        try await webhookStore.insertWebhookEndpoint(endpoint, limit: limit, audit: audit)
    }
    public func webhookEndpoints(for accountID: AccountID) async throws -> [WebhookEndpoint] {
        try await webhookStore.webhookEndpoints(for: accountID)
    }
    public func webhookEndpoint(_ id: WebhookEndpointID, in accountID: AccountID) async throws -> WebhookEndpoint? {
        try await webhookStore.webhookEndpoint(id, in: accountID)
    }
    public func updateWebhookEndpoint(
        _ id: WebhookEndpointID,
        in accountID: AccountID,
        events: Set<WebhookEventType>?,
        enabled: Bool?,
        audit: AuditContext,
        at date: Date
    ) async throws -> WebhookEndpoint? {
        try await webhookStore.updateWebhookEndpoint(id, in: accountID, events: events, enabled: enabled, audit: audit, at: date)
    }
    public func rotateWebhookSecret(
        _ id: WebhookEndpointID,
        in accountID: AccountID,
        sealedSecret: Data,
        previousExpiresAt: Date,
        audit: AuditContext,
        at date: Date
    ) async throws -> Bool {
        try await webhookStore.rotateWebhookSecret(
            id,
            in: accountID,
            sealedSecret: sealedSecret,
            previousExpiresAt: previousExpiresAt,
            audit: audit,
            at: date
        )
    }
    public func deleteWebhookEndpoint(_ id: WebhookEndpointID, in accountID: AccountID, audit: AuditContext, at date: Date) async throws -> Bool {
        try await webhookStore.deleteWebhookEndpoint(id, in: accountID, audit: audit, at: date)
    }
    public func webhookDeliveries(for accountID: AccountID, endpoint: WebhookEndpointID?, limit: Int) async throws -> [WebhookDelivery] {
        try await webhookStore.webhookDeliveries(for: accountID, endpoint: endpoint, limit: limit)
    }
    public func resendWebhookDelivery(_ id: String, in accountID: AccountID, environment: Environment?, at date: Date) async throws -> Bool {
        try await webhookStore.resendWebhookDelivery(id, in: accountID, environment: environment, at: date)
    }
    public func claimWebhookDeliveries(
        at date: Date,
        lease: TimeInterval,
        limit: Int,
        perEndpoint: Int,
        excluding: Set<WebhookEndpointID>
    ) async throws -> [ClaimedWebhookDelivery] {
        try await webhookStore.claimWebhookDeliveries(at: date, lease: lease, limit: limit, perEndpoint: perEndpoint, excluding: excluding)
    }
    public func recordWebhookAttempt(_ record: WebhookAttemptRecord) async throws { try await webhookStore.recordWebhookAttempt(record) }
    public func recordExpiringGraces(at date: Date) async throws -> Int { try await webhookStore.recordExpiringGraces(at: date) }
    public func deleteWebhookDeliveries(before date: Date) async throws -> Int { try await webhookStore.deleteWebhookDeliveries(before: date) }
}

extension WebhookStore {
    /// Claims up to `limit` due deliveries, however many of them one endpoint has.
    public func claimWebhookDeliveries(at date: Date, lease: TimeInterval, limit: Int) async throws -> [ClaimedWebhookDelivery] {
        try await claimWebhookDeliveries(at: date, lease: lease, limit: limit, perEndpoint: limit, excluding: [])
    }
}

/// The signing secret of an endpoint, as the Standard Webhooks specification writes it:
/// `whsec_` and the base64 of 32 random bytes. The bytes are the HMAC key.
public struct WebhookSecret: Sendable {
    public let bytes: Data

    public init(bytes: Data) { self.bytes = bytes }

    public static func generate() -> WebhookSecret {
        WebhookSecret(bytes: Data(SymmetricKey(size: .bits256).withUnsafeBytes { Array($0) }))
    }

    /// `whsec_…`: shown once, when created or rotated.
    public var serialized: String { "whsec_" + bytes.base64EncodedString() }

    /// Reads a `whsec_` secret; `nil` unless it is one of 24 to 64 bytes.
    public init?(serialized: String) {
        guard serialized.hasPrefix("whsec_"), let bytes = Data(base64Encoded: String(serialized.dropFirst(6))),
            (24...64).contains(bytes.count)
        else { return nil }
        self.bytes = bytes
    }

    /// The `webhook-signature` header: `v1,<base64 HMAC-SHA256 of "id.timestamp.body">` for each
    /// secret, space-separated (several during a rotation).
    public static func signatureHeader(id: String, timestamp: Int64, body: String, secrets: [WebhookSecret]) -> String {
        let content = Data("\(id).\(timestamp).\(body)".utf8)
        return secrets.map { secret in
            let mac = HMAC<SHA256>.authenticationCode(for: content, using: SymmetricKey(data: secret.bytes))
            return "v1," + Data(mac).base64EncodedString()
        }
        .joined(separator: " ")
    }
}

/// When to try a delivery again: the steps of the Standard Webhooks specification's example
/// (immediately, 5 s, 5 min, 30 min, 2 h, 5 h, 10 h), then 14 h, 20 h and 24 h: ten attempts
/// over about three days.
public enum WebhookRetrySchedule {
    /// The wait before each attempt: immediately, then 5 s, 5 min, 30 min, 2 h, 5 h, 10 h, 14 h, 20 h, 24 h.
    public static let delays: [TimeInterval] = [0, 5, 300, 1800, 7200, 18_000, 36_000, 50_400, 72_000, 86_400]
    /// How long an attempt may take: an answer within it is one.
    public static let timeout: TimeInterval = 15
    /// An endpoint whose every attempt failed for this long is disabled.
    public static let disableAfter: TimeInterval = 5 * 86_400
    /// The longest `Retry-After` honoured.
    public static let longestRetryAfter: TimeInterval = 86_400
    /// The longest wait between two attempts (the last step, with its jitter).
    public static let longestWait: TimeInterval = 86_400 * 1.1

    /// What to record after attempt number `attempts` (1 for the first) of a delivery ended
    /// with `statusCode` (or none), at `date`.
    /// - Parameters:
    ///   - retryAfter: The answer's `Retry-After`, honoured on 429 and 503.
    ///   - failingSince: Since when the endpoint has failed, before this attempt.
    ///   - jitter: A number in 0..<1; the wait is scaled by 0.9 to 1.1 with it, so retries spread.
    public static func next(
        afterAttempt attempts: Int,
        statusCode: Int?,
        retryAfter: TimeInterval?,
        failingSince: Date?,
        at date: Date,
        jitter: Double = Double.random(in: 0..<1)
    ) -> (next: WebhookAttemptRecord.Next, disable: String?) {
        if let statusCode, (200..<300).contains(statusCode) { return (.succeeded, nil) }
        if statusCode == 410 { return (.failed, "The endpoint answered 410 Gone.") }
        if let failingSince, date.timeIntervalSince(failingSince) >= disableAfter {
            return (.failed, "Every delivery failed for 5 days, since \(failingSince.auditTimestamp).")
        }
        guard attempts < delays.count else { return (.failed, nil) }
        var wait = delays[attempts] * (0.9 + 0.2 * jitter)
        if let retryAfter, statusCode == 429 || statusCode == 503 {
            wait = max(wait, min(retryAfter, longestRetryAfter))
        }
        return (.retry(at: date.addingTimeInterval(wait)), nil)
    }
}

extension WebhookStore {
    /// Resends a delivery of any of the account's environments.
    public func resendWebhookDelivery(_ id: String, in accountID: AccountID, at date: Date) async throws -> Bool {
        try await resendWebhookDelivery(id, in: accountID, environment: nil, at: date)
    }
}
