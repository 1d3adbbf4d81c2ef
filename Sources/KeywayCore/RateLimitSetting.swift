import Foundation

/// An environment's request limit as its owner set it: the documented default, off, or a number.
///
/// Stored as a nullable integer: `NULL` is ``default``, `0` is ``off``, `n` is n requests a second.
public enum RateLimitSetting: Sendable, Hashable, CustomStringConvertible {
    /// The environment's default (``RateLimitPolicy/default(for:)``).
    case `default`
    /// No limit, and no RateLimit fields on responses.
    case off
    /// At most this many requests in any second.
    case requestsPerSecond(Int)

    /// The most a limit may be: beyond it the limit means nothing, and the arithmetic stays small.
    public static let maximum = 1_000_000

    /// The setting a stored value stands for.
    /// - Throws: ``SchemaError`` for a negative value, which no Keyway writes.
    public init(storedValue: Int?) throws {
        switch storedValue {
        case nil: self = .default
        case 0?: self = .off
        case let value? where value > 0 && value <= Self.maximum: self = .requestsPerSecond(value)
        case let value?: throw SchemaError("An environment's stored rate limit is \(value), which Keyway never writes.")
        }
    }

    /// Reads what a person typed: `none` or `0` (off), `default`, or a number of requests a second.
    /// - Throws: ``KeywayError`` `invalid_input` naming `field`.
    public init(parsing text: String, field: String = "requestsPerSecond") throws {
        let trimmed = text.trimmingCharacters(in: .whitespaces).lowercased()
        switch trimmed {
        case "none", "off", "0": self = .off
        case "default": self = .default
        default:
            guard let value = Int(trimmed), value > 0, value <= Self.maximum else {
                throw KeywayError.invalidInput(
                    field: field,
                    "The limit must be a whole number of requests a second from 1 to \(Self.maximum), 'none' (or 0) for no limit, or 'default'."
                )
            }
            self = .requestsPerSecond(value)
        }
    }

    /// The value the stores keep.
    public var storedValue: Int? {
        switch self {
        case .default: nil
        case .off: 0
        case .requestsPerSecond(let value): value
        }
    }

    /// The policy requests of `environment` are measured against; `nil` when there is no limit.
    public func policy(for environment: Environment) -> RateLimitPolicy? {
        switch self {
        case .default: .default(for: environment)
        case .off: nil
        case .requestsPerSecond(let value): RateLimitPolicy(requestsPerSecond: value)
        }
    }

    public var description: String {
        switch self {
        case .default: "default"
        case .off: "none"
        case .requestsPerSecond(let value): "\(value)"
        }
    }
}

/// The per-environment limits, beside the other aggregates of ``KeywayStore``.
public protocol RateLimitStore: Sendable {
    /// Every environment whose limit is not the default.
    func rateLimits() async throws -> [EnvironmentID: RateLimitSetting]
    /// Sets an environment's limit, and moves ``rateLimitsVersion()`` on in the same transaction.
    /// - Throws: ``KeywayError`` `account_not_found` when there is no such environment.
    func setRateLimit(_ setting: RateLimitSetting, for environmentID: EnvironmentID, audit: AuditContext) async throws
    /// A number that changes whenever any process sets a limit: one row, read on a short interval.
    func rateLimitsVersion() async throws -> Int64
}

/// One instance's count of requests made with an environment's key, as instances share them
/// (PostgreSQL).
public struct SharedRateLimitCount: Sendable, Hashable {
    /// The instance that allowed the requests.
    public let instance: String
    /// The instance's exchange that wrote it; each instance numbers its exchanges upwards.
    public let batch: Int64
    public let environmentID: EnvironmentID
    public let count: Int
    /// When the batch was written (the database's clock, milliseconds); 0 in rows being written.
    public let writtenAt: Int64

    public init(instance: String, batch: Int64, environmentID: EnvironmentID, count: Int, writtenAt: Int64 = 0) {
        self.instance = instance
        self.batch = batch
        self.environmentID = environmentID
        self.count = count
        self.writtenAt = writtenAt
    }
}

/// Where instances of one deployment share the requests they allowed, so a limit holds for all
/// of them together: PostgreSQL's `rate_limit_counts`. SQLite runs one instance per file and
/// has none.
public protocol RateLimitExchange: Sendable {
    /// Writes this instance's `counts` (one batch) and that it is alive, and reads the rows other
    /// instances wrote within the last second (the database's clock) in batches newer than
    /// `seen` names for their instance (all of an instance `seen` does not name). Each instance
    /// writes its batches one after another, so once a batch is visible every earlier one is:
    /// no row is returned twice and none is missed while it is inside the window.
    /// - Returns: Those rows, and how many other instances exchanged within the last second,
    ///   idle ones included.
    func exchangeRateLimitCounts(
        _ counts: [SharedRateLimitCount],
        instance: String,
        after seen: [String: Int64]
    ) async throws -> (rows: [SharedRateLimitCount], otherInstances: Int)
    /// Deletes rows written more than `milliseconds` ago.
    func deleteRateLimitCounts(olderThan milliseconds: Int64) async throws
}
