public import Foundation
public import Logging
import Synchronization

/// Creates, verifies and revokes service tokens, keeping every token in memory
/// so that verifying one reads no database.
///
/// The invariant: after a ``refresh()`` that began once a revocation committed,
/// the revoked token is refused, whatever other refreshes run at the same time: one
/// that began earlier and finishes later is dropped, not applied over the newer read. ``refresh()`` replaces the whole table in memory
/// (operators make a handful of tokens), and the server calls it wherever it follows
/// key revocations: on every change the store notifies, and on the same polls.
/// A token this process has not seen (created after the last refresh) is read from
/// the store once; the answer is kept only if no refresh ran meanwhile, so a stale
/// "active" read cannot outlive the refresh that carried its revocation.
public final class ServiceTokens: Sendable {
    private struct State {
        var known: [KeyDigest: ServiceTokenRecord] = [:]
        // Digests the store did not know at their lookup; emptied by every refresh.
        var unknown: Set<KeyDigest> = []
        // Bumped by every refresh that applies: a lookup begun before it must not write.
        var generation: UInt64 = 0
        // Refreshes are numbered as they begin reading; only one newer than the last applied
        // may replace the table, so a slow read begun before a revocation never restores it.
        var issued: UInt64 = 0
        var applied: UInt64 = 0
    }

    private let store: any ServiceTokenStore
    private let state = Mutex(State())
    private let unknownLimit: Int
    private let logger: Logger

    /// - Parameters:
    ///   - unknownCacheLimit: How many unknown digests to remember between refreshes.
    ///   - logger: For token lifecycle events; never given a token.
    public init(
        store: any ServiceTokenStore,
        unknownCacheLimit: Int = 10_000,
        logger: Logger = Logger(label: "keyway.service-tokens", factory: { _ in SwiftLogNoOpLogHandler() })
    ) {
        self.store = store
        self.unknownLimit = max(1, unknownCacheLimit)
        self.logger = logger
    }

    /// The names a service token may have: 1–64 of `A-Z a-z 0-9 . _ -`.
    public static func isValidName(_ name: String) -> Bool {
        (1...64).contains(name.utf8.count)
            && name.utf8.allSatisfy { Base62.isDigit($0) || $0 == UInt8(ascii: ".") || $0 == UInt8(ascii: "_") || $0 == UInt8(ascii: "-") }
    }

    /// Makes a new service token.
    /// - Returns: The token, whose plaintext must be shown once and then dropped, and its record.
    /// - Throws: ``KeywayError`` `invalid_input` for a bad name, `service_token_name_taken`.
    public func create(
        name: String,
        audit: AuditContext = .cli,
        at date: Date = Date()
    ) async throws -> (
        token: GeneratedServiceToken, record: ServiceTokenRecord
    ) {
        guard Self.isValidName(name) else {
            throw KeywayError.invalidInput(field: "name", "A service token's name is 1 to 64 of A-Z, a-z, 0-9, '.', '_' and '-'.")
        }
        let token = GeneratedServiceToken.generate()
        let record = try await store.insertServiceToken(
            ServiceTokenRecord(id: .generate(), name: name, digest: token.digest, hint: token.hint, createdAt: date.keywayPrecision, revokedAt: nil),
            audit: audit
        )
        logger.info("service token created", metadata: ["service_token.id": "\(record.id)", "service_token.hint": "\(record.hint)"])
        return (token, record)
    }

    /// Revokes the active token `reference` names, here at once.
    /// - Returns: The revoked token, or `nil` when no active token has that id or name.
    public func revoke(
        _ reference: ServiceTokenReference,
        audit: AuditContext = .cli,
        at date: Date = Date()
    ) async throws
        -> ServiceTokenRecord?
    {
        guard let record = try await store.revokeServiceToken(reference, at: date.keywayPrecision, audit: audit) else { return nil }
        try await refresh()
        logger.info("service token revoked", metadata: ["service_token.id": "\(record.id)", "service_token.hint": "\(record.hint)"])
        return record
    }

    /// Every service token, newest first.
    public func list() async throws -> [ServiceTokenRecord] {
        try await store.serviceTokens()
    }

    /// Reads every token from the store and replaces what memory holds.
    public func refresh() async throws {
        let ticket = state.withLock { state in
            state.issued &+= 1
            return state.issued
        }
        let records = try await store.serviceTokens()
        let known = Dictionary(records.map { ($0.digest, $0) }, uniquingKeysWith: { first, _ in first })
        state.withLock { state in
            guard ticket > state.applied else { return }
            state.applied = ticket
            state.known = known
            state.unknown = []
            state.generation &+= 1
        }
    }

    /// Verifies a service token presented as a bearer credential.
    /// - Throws: ``KeywayError`` `api_key_not_accepted` for an account's key,
    ///   `invalid_service_token`, `revoked_service_token`.
    public func authenticate(_ token: Substring) async throws -> ServiceTokenRecord {
        guard let digest = ServiceTokenFormat.digest(of: token) else {
            if token.hasPrefix("kw_dev_") || token.hasPrefix("kw_prod_") {
                throw KeywayError(
                    .apiKeyNotAccepted,
                    "This endpoint is for your own services: send a service token (kwst_…, made by `keyway service-tokens create`), not an account's API key."
                )
            }
            throw KeywayError(.invalidServiceToken, "The credential is not a Keyway service token: it must match \(ServiceTokenFormat.pattern).")
        }
        let (cached, isUnknown, generation) = state.withLock { ($0.known[digest], $0.unknown.contains(digest), $0.generation) }
        if let cached { return try Self.check(cached) }
        if isUnknown { throw Self.unknownError }
        let record = try await store.serviceToken(digest: digest)
        state.withLock { state in
            guard state.generation == generation else { return }
            if let record {
                state.known[digest] = record
            } else if state.unknown.count < unknownLimit {
                state.unknown.insert(digest)
            }
        }
        guard let record else { throw Self.unknownError }
        return try Self.check(record)
    }

    /// ``authenticate(_:)`` for a token this process holds as active, without suspending; `nil`
    /// for any other (malformed, not seen here, revoked), which ``authenticate(_:)`` then
    /// decides and explains.
    public func authenticatedFromMemory(_ token: Substring) -> ServiceTokenRecord? {
        guard let digest = ServiceTokenFormat.digest(of: token), let record = state.withLock({ $0.known[digest] }),
            record.revokedAt == nil
        else { return nil }
        return record
    }

    private static func check(_ record: ServiceTokenRecord) throws -> ServiceTokenRecord {
        guard let revokedAt = record.revokedAt else { return record }
        let timestamp = revokedAt.formatted(.iso8601)
        throw KeywayError(
            .revokedServiceToken,
            "The service token was revoked at \(timestamp). Create a new one with `keyway service-tokens create`.",
            details: ["revokedAt": timestamp]
        )
    }

    private static let unknownError = KeywayError(.invalidServiceToken, "The service token is not recognised.")
}
