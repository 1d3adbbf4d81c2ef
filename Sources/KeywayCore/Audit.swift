public import Foundation

/// A change to credentials or access, as the audit log names it.
public enum AuditEvent: String, Sendable, Hashable, CaseIterable, Codable {
    case keyGenerated = "key.generated"
    /// The key was rolled: it works until `graceEndsAt`, then expires.
    case keyRolled = "key.rolled"
    case keyRevoked = "key.revoked"
    /// A rolled key's grace ended (recorded by the maintenance service, at the end).
    case keyExpired = "key.expired"
    case keyReportedLeaked = "key.reported_leaked"
    case signingKeyRotated = "signing_key.rotated"
    case originsChanged = "origins.changed"
    case rateLimitChanged = "rate_limit.changed"
    case serviceTokenCreated = "service_token.created"
    case serviceTokenRevoked = "service_token.revoked"
    case signedUp = "member.signed_up"
    case signedIn = "member.signed_in"
    case signInFailed = "member.sign_in_failed"
    case signedOut = "member.signed_out"
    case passwordChanged = "member.password_changed"
    case memberInvited = "member.invited"
    case invitationRevoked = "member.invitation_revoked"
    case memberJoined = "member.joined"
    case roleChanged = "member.role_changed"
    case memberRemoved = "member.removed"
    case accountPolicyChanged = "account.policy_changed"
    case twoFactorEnabled = "member.two_factor_enabled"
    case twoFactorDisabled = "member.two_factor_disabled"
    case recoveryCodeUsed = "member.recovery_code_used"
    case webhookCreated = "webhook.created"
    case webhookUpdated = "webhook.updated"
    case webhookDeleted = "webhook.deleted"
    case webhookSecretRotated = "webhook.secret_rotated"
    /// Keyway stopped delivering to an endpoint (410, five days of failures).
    case webhookDisabled = "webhook.disabled"
}

/// Who made a change and from where: what every audit entry of one request shares.
public struct AuditContext: Sendable, Hashable {
    /// Who made the change, as the code writes it: a member's email (the dashboard), `cli`,
    /// `system` (Keyway itself), `leak-report` (an unsigned report to `POST /leaked-keys`) or
    /// `github-secret-scanning` (a report GitHub signed). Never a service token's name: no
    /// request a service token authenticates changes what the log records.
    public var actor: String
    /// The client's address as the trusted proxies give it; `nil` outside a request.
    public var clientAddress: String?
    public var userAgent: String?
    public var requestID: String?

    public init(actor: String, clientAddress: String? = nil, userAgent: String? = nil, requestID: String? = nil) {
        self.actor = actor
        self.clientAddress = clientAddress
        // Bounded: a header can be as long as the server accepts.
        self.userAgent = userAgent.map { String($0.prefix(512)) }
        self.requestID = requestID
    }

    /// The command line: `keyway …` run by an operator.
    public static let cli = AuditContext(actor: "cli")
    /// Keyway itself (a grace that ended, a retention sweep).
    public static let system = AuditContext(actor: "system")
}

/// One entry of the audit log. Never a key or a secret: a key is named by its id, its hint
/// and its SHA-256 (`hashedToken`, base64, as GitHub's audit log has it), which a holder of
/// the key can compute to search for it.
public struct AuditEntry: Sendable, Hashable {
    public var id: String
    public var at: Date
    /// `nil` for changes that belong to no account (service tokens are the operator's).
    public var accountID: AccountID?
    public var environment: Environment?
    public var event: AuditEvent
    public var actor: String
    /// What changed: `key`, `signing_key`, `service_token`, `member`, `environment`.
    public var resourceType: String?
    public var resourceID: String?
    /// The key's or token's hint; never the secret.
    public var resourceHint: String?
    public var hashedToken: String?
    public var clientAddress: String?
    public var userAgent: String?
    public var requestID: String?
    /// What else the event says (`revocationReason`, `graceEndsAt`, `url`, `source`, `limit`…).
    public var details: [String: String]

    public init(
        id: String = AuditEntry.newID(),
        at: Date,
        accountID: AccountID?,
        environment: Environment? = nil,
        event: AuditEvent,
        context: AuditContext,
        resourceType: String? = nil,
        resourceID: String? = nil,
        resourceHint: String? = nil,
        hashedToken: String? = nil,
        details: [String: String] = [:]
    ) {
        self.id = id
        self.at = at.keywayPrecision
        self.accountID = accountID
        self.environment = environment
        self.event = event
        self.actor = context.actor
        self.resourceType = resourceType
        self.resourceID = resourceID
        self.resourceHint = resourceHint
        self.hashedToken = hashedToken
        self.clientAddress = context.clientAddress
        self.userAgent = context.userAgent
        self.requestID = context.requestID
        self.details = details
    }

    /// `aud_` and 20 random base62 characters.
    public static func newID() -> String {
        "aud_" + Base62.randomString(length: 20)
    }
}

extension KeyDigest {
    /// SHA-256 of the key, base64: the `hashedToken` of audit entries.
    public var base64: String { Data(bytes).base64EncodedString() }
}

/// Which entries to read, newest first.
public struct AuditQuery: Sendable, Hashable {
    public var event: AuditEvent?
    public var environment: Environment?
    /// Entries at or after this time only.
    public var since: Date?
    /// The page after this entry (its time and id), for paging newest first.
    public var before: (at: Date, id: String)?
    public var limit: Int

    public init(event: AuditEvent? = nil, environment: Environment? = nil, since: Date? = nil, before: (at: Date, id: String)? = nil, limit: Int = 50)
    {
        self.event = event
        self.environment = environment
        self.since = since
        self.before = before
        self.limit = limit
    }

    public static func == (lhs: AuditQuery, rhs: AuditQuery) -> Bool {
        lhs.event == rhs.event && lhs.environment == rhs.environment && lhs.since == rhs.since && lhs.limit == rhs.limit
            && lhs.before?.at == rhs.before?.at && lhs.before?.id == rhs.before?.id
    }

    public func hash(into hasher: inout Hasher) {
        hasher.combine(event)
        hasher.combine(environment)
        hasher.combine(since)
        hasher.combine(limit)
        hasher.combine(before?.at)
        hasher.combine(before?.id)
    }
}

extension AuditEntry {
    /// `key.generated`: a new key, named by id, hint and hash.
    public static func keyGenerated(_ record: SecretKeyRecord, context: AuditContext) -> AuditEntry {
        AuditEntry(
            at: record.createdAt,
            accountID: record.environmentID.accountID,
            environment: record.environmentID.environment,
            event: .keyGenerated,
            context: context,
            resourceType: "key",
            resourceID: record.id.rawValue,
            resourceHint: record.hint,
            hashedToken: record.digest.base64
        )
    }

    /// What replacing a key at `date` did to it: `key.rolled` (with `graceEndsAt`) when it works
    /// on until `revocation.revokedAt`, `key.revoked` (with `revocationReason`) when it stopped now.
    public static func keyReplaced(
        id: SecretKeyID,
        hint: String,
        in environmentID: EnvironmentID,
        revocation: KeyRevocation,
        replacement: SecretKeyID,
        at date: Date,
        context: AuditContext
    ) -> AuditEntry {
        let rolled = revocation.revokedAt > date
        var details = ["replacedBy": replacement.rawValue]
        if rolled {
            details["graceEndsAt"] = revocation.revokedAt.auditTimestamp
        } else {
            details["revocationReason"] = revocation.reason.rawValue
        }
        return AuditEntry(
            at: date,
            accountID: environmentID.accountID,
            environment: environmentID.environment,
            event: rolled ? .keyRolled : .keyRevoked,
            context: context,
            resourceType: "key",
            resourceID: id.rawValue,
            resourceHint: hint,
            hashedToken: revocation.digest.base64,
            details: details
        )
    }

    /// `key.reported_leaked`: the key was revoked at `date` because it was reported leaked.
    public static func keyLeaked(_ record: SecretKeyRecord, report: LeakReport, at date: Date, context: AuditContext) -> AuditEntry {
        AuditEntry(
            at: date,
            accountID: record.environmentID.accountID,
            environment: record.environmentID.environment,
            event: .keyReportedLeaked,
            context: context,
            resourceType: "key",
            resourceID: record.id.rawValue,
            resourceHint: record.hint,
            hashedToken: record.digest.base64,
            details: report.details
        )
    }

    /// `key.expired`: a rolled key's grace ended at `record.revokedAt`.
    public static func keyExpired(_ record: SecretKeyRecord) -> AuditEntry {
        AuditEntry(
            at: record.revokedAt ?? record.createdAt,
            accountID: record.environmentID.accountID,
            environment: record.environmentID.environment,
            event: .keyExpired,
            context: .system,
            resourceType: "key",
            resourceID: record.id.rawValue,
            resourceHint: record.hint,
            hashedToken: record.digest.base64,
            details: ["revocationReason": RevocationReason.expiredAfterRoll.rawValue]
        )
    }

    /// `rate_limit.changed`, with the new `limit` (`default`, `none` or a number).
    public static func rateLimitChanged(
        _ setting: RateLimitSetting,
        for environmentID: EnvironmentID,
        at date: Date,
        context: AuditContext
    )
        -> AuditEntry
    {
        environmentChanged(.rateLimitChanged, environmentID, at: date, context: context, details: ["limit": setting.description])
    }

    /// `origins.changed`, with the new list, one origin per line.
    public static func originsChanged(
        _ origins: [BrowserOrigin],
        for environmentID: EnvironmentID,
        at date: Date,
        context: AuditContext
    )
        -> AuditEntry
    {
        let list = origins.map(\.serialized).joined(separator: "\n")
        return environmentChanged(.originsChanged, environmentID, at: date, context: context, details: ["origins": list])
    }

    /// A change to one of an environment's settings: the environment is the resource.
    private static func environmentChanged(
        _ event: AuditEvent,
        _ environmentID: EnvironmentID,
        at date: Date,
        context: AuditContext,
        details: [String: String]
    ) -> AuditEntry {
        inEnvironment(
            event,
            environmentID,
            at: date,
            context: context,
            resource: ("environment", environmentID.environment.rawValue),
            details: details
        )
    }

    /// An entry about `resource` (its type and id) in one environment.
    private static func inEnvironment(
        _ event: AuditEvent,
        _ environmentID: EnvironmentID,
        at date: Date,
        context: AuditContext,
        resource: (type: String, id: String),
        details: [String: String]
    ) -> AuditEntry {
        AuditEntry(
            at: date,
            accountID: environmentID.accountID,
            environment: environmentID.environment,
            event: event,
            context: context,
            resourceType: resource.type,
            resourceID: resource.id,
            details: details
        )
    }

    /// `signing_key.rotated`: a new key signs the environment's user tokens.
    public static func signingKeyRotated(_ record: SigningKeyRecord, context: AuditContext) -> AuditEntry {
        AuditEntry(
            at: record.createdAt,
            accountID: record.environmentID.accountID,
            environment: record.environmentID.environment,
            event: .signingKeyRotated,
            context: context,
            resourceType: "signing_key",
            resourceID: record.id
        )
    }

    /// `service_token.created` or `service_token.revoked`: the operator's, so of no account.
    public static func serviceToken(_ event: AuditEvent, _ record: ServiceTokenRecord, at date: Date, context: AuditContext) -> AuditEntry {
        AuditEntry(
            at: date,
            accountID: nil,
            event: event,
            context: context,
            resourceType: "service_token",
            resourceID: record.id.rawValue,
            resourceHint: record.hint,
            hashedToken: record.digest.base64,
            details: ["name": record.name]
        )
    }

    /// A change to a webhook endpoint; the endpoint is the resource, its URL a detail.
    public static func webhook(
        _ event: AuditEvent,
        id: WebhookEndpointID,
        in environmentID: EnvironmentID,
        at date: Date,
        context: AuditContext,
        details: [String: String] = [:]
    ) -> AuditEntry {
        inEnvironment(event, environmentID, at: date, context: context, resource: ("webhook_endpoint", id.rawValue), details: details)
    }

    /// A member's event (signed up, in, out, a failed sign-in, a new password, joined,
    /// a new role, removed), in the account of `member`.
    public static func member(
        _ event: AuditEvent,
        _ member: Member,
        at date: Date,
        context: AuditContext,
        details: [String: String] = [:]
    ) -> AuditEntry {
        AuditEntry(
            at: date,
            accountID: member.accountID,
            event: event,
            context: context,
            resourceType: "member",
            resourceID: member.id.rawValue,
            details: details.merging(["email": member.email]) { own, _ in own }
        )
    }

    /// An invitation sent or revoked; never its token.
    public static func invitation(_ event: AuditEvent, _ invitation: Invitation, at date: Date, context: AuditContext) -> AuditEntry {
        AuditEntry(
            at: date,
            accountID: invitation.accountID,
            event: event,
            context: context,
            resourceType: "invitation",
            resourceID: invitation.id.rawValue,
            details: ["email": invitation.email, "role": invitation.role.rawValue]
        )
    }

    /// The account's rules changed.
    public static func accountPolicy(_ policy: AccountPolicy, of accountID: AccountID, at date: Date, context: AuditContext) -> AuditEntry {
        AuditEntry(
            at: date,
            accountID: accountID,
            event: .accountPolicyChanged,
            context: context,
            resourceType: "account",
            resourceID: accountID.rawValue,
            details: [
                "developersManageProductionKeys": String(policy.developersManageProductionKeys),
                "requireTwoFactor": String(policy.requireTwoFactor),
            ]
        )
    }
}

extension Date {
    /// RFC 3339 with milliseconds, UTC: how audit details write a time.
    public var auditTimestamp: String { keywayTimestamp }

    /// RFC 3339 in UTC with milliseconds, e.g. `2026-11-29T13:00:00.000Z`, rounded to the
    /// millisecond as the stores round.
    ///
    /// Written by hand: Foundation's ISO 8601 format style costs more than the
    /// rest of a typical response.
    public var keywayTimestamp: String {
        // Rounded as the stores round: a stored 999 ms must not print as 998.
        let milliseconds = keywayMilliseconds
        var seconds = time_t((milliseconds - ((milliseconds % 1000) + 1000) % 1000) / 1000)
        var parts = tm()
        gmtime_r(&seconds, &parts)
        var bytes = [UInt8]()
        bytes.reserveCapacity(24)
        func append(_ value: Int, digits: Int) {
            var divisor = 1
            for _ in 1..<digits { divisor *= 10 }
            var remaining = value
            while divisor > 0 {
                bytes.append(UInt8(ascii: "0") + UInt8(remaining / divisor % 10))
                remaining %= divisor
                divisor /= 10
            }
        }
        append(Int(parts.tm_year) + 1900, digits: 4)
        bytes.append(UInt8(ascii: "-"))
        append(Int(parts.tm_mon) + 1, digits: 2)
        bytes.append(UInt8(ascii: "-"))
        append(Int(parts.tm_mday), digits: 2)
        bytes.append(UInt8(ascii: "T"))
        append(Int(parts.tm_hour), digits: 2)
        bytes.append(UInt8(ascii: ":"))
        append(Int(parts.tm_min), digits: 2)
        bytes.append(UInt8(ascii: ":"))
        append(Int(parts.tm_sec), digits: 2)
        bytes.append(UInt8(ascii: "."))
        append(Int((milliseconds % 1000 + 1000) % 1000), digits: 3)
        bytes.append(UInt8(ascii: "Z"))
        return String(decoding: bytes, as: UTF8.self)
    }
}

/// How a store keeps an entry's details: a JSON object of strings, keys sorted.
public enum AuditDetails {
    public static func encode(_ details: [String: String]) throws -> String {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        return String(decoding: try encoder.encode(details), as: UTF8.self)
    }

    public static func decode(_ text: String) throws -> [String: String] {
        try JSONDecoder().decode([String: String].self, from: Data(text.utf8))
    }
}

extension AuditEntry: Encodable {
    private enum CodingKeys: String, CodingKey {
        case id, at, accountId, environment, event, actor, resourceType, resourceId, resourceHint, hashedToken, clientAddress, userAgent,
            requestId, details
    }

    /// The documented export shape (`keyway audit export`): absent fields are left out, `at`
    /// is RFC 3339 with milliseconds.
    public func encode(to encoder: any Encoder) throws {
        var container = encoder.container(keyedBy: CodingKeys.self)
        try container.encode(id, forKey: .id)
        try container.encode(at.auditTimestamp, forKey: .at)
        try container.encodeIfPresent(accountID?.rawValue, forKey: .accountId)
        try container.encodeIfPresent(environment?.rawValue, forKey: .environment)
        try container.encode(event.rawValue, forKey: .event)
        try container.encode(actor, forKey: .actor)
        try container.encodeIfPresent(resourceType, forKey: .resourceType)
        try container.encodeIfPresent(resourceID, forKey: .resourceId)
        try container.encodeIfPresent(resourceHint, forKey: .resourceHint)
        try container.encodeIfPresent(hashedToken, forKey: .hashedToken)
        try container.encodeIfPresent(clientAddress, forKey: .clientAddress)
        try container.encodeIfPresent(userAgent, forKey: .userAgent)
        try container.encodeIfPresent(requestID, forKey: .requestId)
        try container.encode(details, forKey: .details)
    }
}
