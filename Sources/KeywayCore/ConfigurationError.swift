public import Foundation

/// A setting that cannot be used: which one and why, said so an operator can fix it.
///
/// The one error type of configuration, whether the value came from a `KEYWAY_*` variable
/// (``variable`` names it) or from a file a setting points at.
public struct ConfigurationError: Error, CustomStringConvertible, Equatable, Sendable {
    /// The environment variable to fix, when the value came from one.
    public let variable: String?
    /// What is wrong and what is accepted. Never repeats a secret value.
    public let message: String

    /// A problem with `variable`'s value; the description reads "`variable` `message`".
    public init(variable: String, message: String) {
        self.variable = variable
        self.message = message
    }

    /// A problem that is not one variable's value (a file's content, a connection).
    public init(_ message: String) {
        self.variable = nil
        self.message = message
    }

    public var description: String { variable.map { "\($0) \(message)" } ?? message }
}

/// Reads `KEYWAY_*` settings from a process environment: blank means unset, and a value
/// that cannot be used throws a ``ConfigurationError`` naming its variable.
public struct EnvironmentSettings: Sendable {
    private let environment: [String: String]

    public init(_ environment: [String: String]) {
        self.environment = environment
    }

    /// The variable's value without surrounding whitespace; `nil` when unset or blank.
    public func string(_ name: String) -> String? {
        guard let raw = environment[name]?.trimmingCharacters(in: .whitespacesAndNewlines), !raw.isEmpty else { return nil }
        return raw
    }

    /// The variable as a whole number within `range`; `nil` when unset or blank.
    public func integer(_ name: String, in range: ClosedRange<Int>) throws(ConfigurationError) -> Int? {
        guard let raw = string(name) else { return nil }
        guard let number = Int(raw), range.contains(number) else {
            throw ConfigurationError(
                variable: name,
                message: "must be a whole number from \(range.lowerBound) to \(range.upperBound), not '\(raw)'"
            )
        }
        return number
    }
}
