public import Foundation
public import Logging
import Synchronization

/// The principal of a request authenticated with a secret key.
public struct AuthenticatedKey: Sendable, Hashable {
    /// The key's record, for last-used bookkeeping.
    public let keyID: SecretKeyID
    /// The account and environment every operation of the request is confined to.
    public let environmentID: EnvironmentID
    /// `kw_dev_…abcd`, safe to show and log.
    public let hint: String
    /// The hint in visible ASCII, `kw_dev_...abcd`, for a header field's value (RFC 9110 §5.5).
    /// Made once here: the forward-auth answer sends it on every request, and Foundation's
    /// `replacingOccurrences` cost 6 % of a request's CPU there.
    public let asciiHint: String
    /// When the key stops working: the end of its grace period after a roll; `nil` for the
    /// environment's current key.
    public internal(set) var expiresAt: Date?

    /// Builds a principal; ``SecretKeys/authenticate(_:at:)`` is what makes real ones.
    public init(keyID: SecretKeyID, environmentID: EnvironmentID, hint: String, expiresAt: Date? = nil) {
        self.keyID = keyID
        self.environmentID = environmentID
        self.hint = hint
        self.asciiHint = Self.ascii(hint)
        self.expiresAt = expiresAt
    }

    static func ascii(_ hint: String) -> String {
        var ascii = ""
        ascii.reserveCapacity(hint.utf8.count)
        for scalar in hint.unicodeScalars {
            if scalar == "…" {
                ascii += "..."
            } else {
                ascii.unicodeScalars.append(scalar)
            }
        }
        return ascii
    }
}

/// Generates, verifies and revokes secret keys, keeping verified keys in
/// memory so that authenticating a known key reads no database.
///
/// Revocation is never stale in this process: ``generate(for:replacing:retiring:createdBy:at:)``
/// marks the replaced key revoked in memory before it returns. Revocations made
/// by other processes (the CLI, other instances) arrive through
/// ``followRevocations()``, which the server calls on a short interval.
///
/// A rolled key stays cached as active with its ``AuthenticatedKey/expiresAt``: the end of
/// its grace is a date, checked against the clock on every use, so no process needs to hear
/// about it again when it comes.
public final class SecretKeys: Sendable {
    private enum Entry {
        /// Accepted until the key's `expiresAt`, if it has one.
        case active(AuthenticatedKey)
        case revoked(at: Date, reason: RevocationReason)
        case unknown
    }

    private struct State {
        var entries: [KeyDigest: Entry] = [:]
        // Revoked and unknown digests in arrival order; the oldest is evicted
        // when full, so a flood of invented keys cannot grow memory.
        var inactiveRing: [KeyDigest?]
        var ringIndex = 0
        // Bumped by every revocation, so a lookup that raced one does not cache a stale answer.
        var generation: UInt64 = 0
        var lastUsed: [SecretKeyID: Date] = [:]
        var revocationSequence: Int64?

        mutating func remember(_ digest: KeyDigest, as entry: Entry) {
            // Revocation is final: a late writer (a generate that committed before
            // a racing one revoked its key) must not bring a revoked key back.
            if case .revoked = entries[digest] {
                if case .revoked = entry {} else { return }
            }
            if case .active = entry {
                entries[digest] = entry
                return
            }
            if let evicted = inactiveRing[ringIndex], evicted != digest {
                // A digest that became active since is not the ring's to evict.
                if case .active = entries[evicted] {} else { entries[evicted] = nil }
            }
            inactiveRing[ringIndex] = digest
            ringIndex = (ringIndex + 1) % inactiveRing.count
            entries[digest] = entry
        }

        /// Gives a cached active key the end of its grace. A key not cached as active is
        /// forgotten, unless revoked: its next use reads the store, which knows the date.
        mutating func schedule(_ digest: KeyDigest, until end: Date) {
            switch entries[digest] {
            case .active(var key):
                key.expiresAt = end
                entries[digest] = .active(key)
            case .revoked: break
            case .unknown, nil: entries[digest] = nil
            }
        }
    }

    private let store: any SecretKeyStore
    private let state: Mutex<State>
    private let logger: Logger
    /// How many keys each environment may generate per window; `nil` for no limit.
    public let generationLimit: KeyGenerationLimit?

    /// - Parameters:
    ///   - store: Where keys are kept.
    ///   - inactiveCacheLimit: How many revoked or unknown keys to remember,
    ///     which bounds this cache's memory whatever keys callers invent.
    ///   - generationLimit: How many keys each environment may generate per window
    ///     (`KEYWAY_KEY_GENERATIONS_PER_MINUTE`); `nil` for no limit.
    ///   - logger: For key lifecycle events; never given a key. Silent by default.
    public init(
        store: any SecretKeyStore,
        inactiveCacheLimit: Int = 10_000,
        generationLimit: KeyGenerationLimit? = nil,
        logger: Logger = Logger(label: "keyway.keys", factory: { _ in SwiftLogNoOpLogHandler() })
    ) {
        self.store = store
        self.generationLimit = generationLimit
        self.state = Mutex(State(inactiveRing: Array(repeating: nil, count: max(1, inactiveCacheLimit))))
        self.logger = logger
    }

    /// Makes a new key for an environment, revoking its previous key at once or, rolled,
    /// when its grace period ends.
    ///
    /// - Parameters:
    ///   - replacement: Which active key may be replaced: a page that showed
    ///     a key passes `.only(thatKey)`, so two submissions cannot both generate.
    ///   - retirement: `.revokeNow` (Regenerate), or `.roll(until:)`. A key still in an
    ///     earlier roll's grace is revoked now either way.
    /// - Returns: The key, whose plaintext must be shown once and then dropped, and its record.
    /// - Throws: ``KeywayError`` `account_not_found`, `active_key_changed` when
    ///   `replacement` no longer names the active key, `too_many_key_generations`
    ///   when ``generationLimit`` is reached, or a storage failure.
    public func generate(
        for environmentID: EnvironmentID,
        replacing replacement: KeyReplacement = .whicheverIsActive,
        retiring retirement: KeyRetirement = .revokeNow,
        audit: AuditContext,
        at date: Date = Date()
    ) async throws -> (
        key: GeneratedSecretKey, record: SecretKeyRecord
    ) {
        let key = GeneratedSecretKey.generate(for: environmentID.environment)
        let generation = try await store.insertKeyRevokingPrevious(
            key,
            for: environmentID,
            replacing: replacement,
            retiring: retirement,
            limit: generationLimit,
            audit: audit,
            at: date.keywayPrecision
        )
        // Marks the replaced keys revoked here at once, but leaves the followed sequence
        // alone: other processes' revocations numbered below these may not have been read yet.
        apply(generation.revoked, advancingSequence: false)
        // The new key is not cached here: its first use reads it from the store, on the
        // path that cannot race a revocation (see `authenticate`). Caching it here could
        // resurrect it if a concurrent generate has already revoked it.
        logger.info(
            "secret key generated",
            metadata: [
                "account.id": "\(environmentID.accountID)", "environment": "\(environmentID.environment.rawValue)",
                "key.id": "\(generation.key.id)", "key.hint": "\(key.hint)", "keys.revoked": "\(generation.revoked.count)",
            ]
        )
        return (key, generation.key)
    }

    /// Makes a new key for an environment; its current key keeps working for `grace`, then
    /// is refused as `revoked_api_key` with `revocationReason` `expired_after_roll`.
    public func roll(
        for environmentID: EnvironmentID,
        replacing replacement: KeyReplacement = .whicheverIsActive,
        grace: KeyGrace,
        audit: AuditContext,
        at date: Date = Date()
    ) async throws -> (key: GeneratedSecretKey, record: SecretKeyRecord) {
        let date = date.keywayPrecision
        return try await generate(
            for: environmentID,
            replacing: replacement,
            retiring: .roll(until: grace.end(after: date)),
            audit: audit,
            at: date
        )
    }

    /// ``generate(for:replacing:retiring:audit:at:)`` by `createdBy`, with no request behind it.
    public func generate(
        for environmentID: EnvironmentID,
        replacing replacement: KeyReplacement = .whicheverIsActive,
        retiring retirement: KeyRetirement = .revokeNow,
        createdBy: String,
        at date: Date = Date()
    ) async throws -> (key: GeneratedSecretKey, record: SecretKeyRecord) {
        try await generate(for: environmentID, replacing: replacement, retiring: retirement, audit: AuditContext(actor: createdBy), at: date)
    }

    /// ``roll(for:replacing:grace:audit:at:)`` by `createdBy`, with no request behind it.
    public func roll(
        for environmentID: EnvironmentID,
        replacing replacement: KeyReplacement = .whicheverIsActive,
        grace: KeyGrace,
        createdBy: String,
        at date: Date = Date()
    ) async throws -> (key: GeneratedSecretKey, record: SecretKeyRecord) {
        try await roll(for: environmentID, replacing: replacement, grace: grace, audit: AuditContext(actor: createdBy), at: date)
    }

    /// Verifies a bearer credential.
    ///
    /// Checks format and checksum first, then memory, and reads the store only
    /// for a digest this process has not seen.
    /// - Parameter token: The credential after the `Bearer` scheme, trimmed.
    /// - Throws: ``KeywayError`` saying exactly what is wrong with the key.
    public func authenticate(_ token: Substring, at date: Date = Date()) async throws -> AuthenticatedKey {
        let presented: PresentedSecretKey
        do {
            presented = try SecretKeyFormat.parse(token)
        } catch {
            if Self.looksLikeJWT(token) {
                throw KeywayError(
                    .userTokenNotAccepted,
                    "User tokens are for the frontend; this endpoint needs your backend's secret API key."
                )
            }
            throw KeywayError(.malformedAPIKey, error.explanation)
        }
        let (cached, generation) = remembered(presented, at: date)
        switch cached {
        case .active(let key): return try key.accepted(at: date)
        case .revoked(let at, let reason): throw Self.revokedError(at: at, reason: reason)
        case .unknown: throw Self.invalidError
        case nil: break
        }

        let entry: Entry
        if let record = try await store.secretKey(digest: presented.digest),
            record.environmentID.environment == presented.environment
        {
            if let revokedAt = record.revokedAt, record.graceEnd(at: date) == nil {
                entry = .revoked(at: revokedAt, reason: record.revocationReason ?? .regenerated)
            } else {
                // A rolled key in its grace is active until the grace ends.
                entry = .active(
                    AuthenticatedKey(keyID: record.id, environmentID: record.environmentID, hint: record.hint, expiresAt: record.revokedAt)
                )
            }
        } else {
            entry = .unknown
        }
        state.withLock { state in
            if state.generation == generation {
                state.remember(presented.digest, as: entry)
            }
            if case .active(let key) = entry {
                state.lastUsed[key.keyID] = date
            }
        }
        switch entry {
        case .active(let key): return key
        case .revoked(let at, let reason): throw Self.revokedError(at: at, reason: reason)
        case .unknown: throw Self.invalidError
        }
    }

    /// The key's principal when this process holds it as active and accepted at `date`: what
    /// ``authenticate(_:at:)`` answers from memory, with the same last-used bookkeeping, without
    /// suspending. `nil` for anything else (malformed, not seen here, revoked, past its grace),
    /// which ``authenticate(_:at:)`` then decides and explains.
    public func authenticatedFromMemory(_ token: Substring, at date: Date = Date()) -> AuthenticatedKey? {
        guard let presented = try? SecretKeyFormat.parse(token),
            case .active(let key) = remembered(presented, at: date).entry
        else { return nil }
        return try? key.accepted(at: date)
    }

    /// What memory holds for a presented key, and the revocation generation it was read at. An
    /// active key accepted at `date` is marked used; one whose grace has ended becomes revoked.
    private func remembered(_ presented: PresentedSecretKey, at date: Date) -> (entry: Entry?, generation: UInt64) {
        state.withLock { state in
            let entry = state.entries[presented.digest]
            if case .active(let key) = entry {
                if key.isAccepted(at: date) {
                    state.lastUsed[key.keyID] = date
                } else if let end = key.expiresAt {
                    // Its grace is over: from now on a revoked key like any other, in the bounded ring.
                    state.remember(presented.digest, as: .revoked(at: end, reason: .expiredAfterRoll))
                }
            }
            return (entry, state.generation)
        }
    }

    /// Revokes a key reported leaked, when it is active or in a grace period: possession of a
    /// live key is proof enough that it is compromised, whoever reports it.
    ///
    /// - Parameter token: What the report calls a key; anything that is not one is `.unknown`
    ///   without a lookup.
    /// - Returns: What the report did; a revocation applies here before this returns.
    public func reportLeaked(
        _ token: Substring,
        report: LeakReport,
        audit: AuditContext,
        at date: Date = Date()
    ) async throws
        -> LeakedKeyOutcome
    {
        guard let presented = try? SecretKeyFormat.parse(token) else { return .unknown }
        // A read first (batched on PostgreSQL, a point read on SQLite): a report of invented or
        // dead keys must cost no write transaction, and no environment's lock.
        guard let found = try await store.secretKey(digest: presented.digest) else { return .unknown }
        guard found.isAccepted(at: date) else { return .alreadyRevoked(found) }
        let outcome = try await store.revokeLeakedKey(digest: presented.digest, report: report, audit: audit, at: date)
        if case .revoked(let record, let revocation) = outcome {
            apply([revocation], advancingSequence: false)
            logger.warning(
                "secret key revoked as leaked",
                metadata: [
                    "account.id": "\(record.environmentID.accountID)", "environment": "\(record.environmentID.environment.rawValue)",
                    "key.id": "\(record.id)", "key.hint": "\(record.hint)", "leak.url": "\(report.url ?? "")",
                ]
            )
        }
        return outcome
    }

    /// Applies revocations made by other processes since the last call.
    ///
    /// The first call only notes where the store's revocation sequence stands:
    /// keys revoked before it were never cached as active by this process.
    public func followRevocations() async throws {
        guard let after = state.withLock({ $0.revocationSequence }) else {
            let latest = try await store.latestRevocationSequence()
            state.withLock { $0.revocationSequence = max($0.revocationSequence ?? 0, latest) }
            return
        }
        var sequence = after
        while true {
            let batch = try await store.revocations(after: sequence, limit: 500)
            apply(batch, advancingSequence: true)
            guard let last = batch.last else { break }
            sequence = last.sequence
            if batch.count < 500 { break }
        }
    }

    /// How many keys' last-used times are gathered and not written yet.
    public var pendingUsageCount: Int {
        state.withLock { $0.lastUsed.count }
    }

    /// Writes the last-used times gathered since the previous flush; on failure
    /// (or cancellation) they stay pending for the next one.
    public func flushUsage() async throws {
        let pending = state.withLock { state in
            defer { state.lastUsed = [:] }
            return state.lastUsed
        }
        guard !pending.isEmpty else { return }
        do {
            try await store.recordKeyUsage(pending)
        } catch {
            // Put them back so a transient failure loses nothing; newer uses win.
            state.withLock { state in
                state.lastUsed.merge(pending) { newer, _ in newer }
            }
            throw error
        }
    }

    /// Marks revoked digests in memory.
    /// - Parameter advancingSequence: Whether `revocations` is a contiguous read of the
    ///   store's sequence (``followRevocations()``), so nothing below them is still unread.
    private func apply(_ revocations: [KeyRevocation], advancingSequence: Bool, at date: Date = Date()) {
        guard !revocations.isEmpty else { return }
        state.withLock { state in
            for revocation in revocations {
                if revocation.revokedAt > date, revocation.reason == .expiredAfterRoll {
                    // A roll with a grace: the key stays active until then, and knows when. Any
                    // other revocation dated later (its writer's clock ahead) applies now.
                    state.schedule(revocation.digest, until: revocation.revokedAt)
                } else {
                    state.remember(revocation.digest, as: .revoked(at: revocation.revokedAt, reason: revocation.reason))
                }
                if advancingSequence {
                    state.revocationSequence = max(state.revocationSequence ?? 0, revocation.sequence)
                }
            }
            state.generation &+= 1
        }
    }

    private static let invalidError = KeywayError(
        .invalidAPIKey,
        "The API key is not recognised. Copy the current key for this environment from Settings → API Keys."
    )

    private static func revokedError(at date: Date, reason: RevocationReason) -> KeywayError {
        let timestamp = date.formatted(.iso8601)
        let because =
            switch reason {
            case .regenerated: "a new key was generated for its environment"
            case .expiredAfterRoll: "the key was rolled and its grace period ended"
            case .leaked: "the key was reported leaked; generate a new key and remove this one from where it was found"
            }
        return KeywayError(
            .revokedAPIKey,
            "The API key was revoked at \(timestamp) because \(because). Use the current key.",
            details: ["revokedAt": timestamp, "revocationReason": reason.rawValue]
        )
    }

    fileprivate static func expiredError(at date: Date) -> KeywayError {
        revokedError(at: date, reason: .expiredAfterRoll)
    }

    private static func looksLikeJWT(_ token: Substring) -> Bool {
        token.hasPrefix("eyJ") && token.utf8.count(where: { $0 == UInt8(ascii: ".") }) == 2
    }
}

extension AuthenticatedKey {
    /// Whether the key is accepted at `date`: always, unless its grace has ended.
    public func isAccepted(at date: Date) -> Bool {
        expiresAt.map { date < $0 } ?? true
    }

    /// This key, or `revoked_api_key` (`expired_after_roll`) once its grace has ended.
    fileprivate func accepted(at date: Date) throws -> AuthenticatedKey {
        guard let expiresAt, date >= expiresAt else { return self }
        throw SecretKeys.expiredError(at: expiresAt)
    }
}

extension Date {
    /// Milliseconds since 1970, the unit every store keeps; rounded to the nearest, and clamped
    /// rather than trapping for dates no store can hold.
    public var keywayMilliseconds: Int64 {
        let milliseconds = (timeIntervalSince1970 * 1000).rounded()
        return Int64(exactly: milliseconds) ?? (milliseconds.isNaN || milliseconds < 0 ? Int64.min / 2 : Int64.max / 2)
    }

    /// A date read back from storage.
    public init(keywayMilliseconds milliseconds: Int64) {
        self.init(timeIntervalSince1970: Double(milliseconds) / 1000)
    }

    /// This date truncated to whole milliseconds, so it survives a round trip through any store unchanged.
    public var keywayPrecision: Date {
        Date(timeIntervalSince1970: (timeIntervalSince1970 * 1000).rounded(.down) / 1000)
    }
}
