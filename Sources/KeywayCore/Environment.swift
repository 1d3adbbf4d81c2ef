/// One of the two sandboxes every account owns.
///
/// Every user, secret key and user token belongs to exactly one environment;
/// nothing created in one is visible from the other.
public enum Environment: String, Sendable, Hashable, CaseIterable, Codable {
    case development
    case production

    /// The environment a request did *not* authenticate to, used for the
    /// "it exists in your other environment" hint.
    public var other: Environment {
        switch self {
        case .development: .production
        case .production: .development
        }
    }
}

/// An account's environment: the scope every user and key lives in.
public struct EnvironmentID: Sendable, Hashable {
    /// The account that owns the environment.
    public var accountID: AccountID
    /// Which of the account's two environments.
    public var environment: Environment

    /// - Parameters:
    ///   - accountID: The owning account.
    ///   - environment: Development or production.
    public init(accountID: AccountID, environment: Environment) {
        self.accountID = accountID
        self.environment = environment
    }

    /// The same account's other environment.
    public var sibling: EnvironmentID {
        EnvironmentID(accountID: accountID, environment: environment.other)
    }
}
