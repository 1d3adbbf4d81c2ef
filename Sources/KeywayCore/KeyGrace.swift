public import Foundation

/// How long a rolled key keeps working after its replacement is generated: none, or up to
/// seven days. A grace is a length the owner chooses, not a fixed day.
public struct KeyGrace: Sendable, Hashable, CustomStringConvertible {
    /// The length in whole seconds, from 0 (the old key stops now) to ``maximumSeconds``.
    public let seconds: Int

    /// Seven days: long enough to redeploy every backend, short enough that a forgotten
    /// grace does not keep a key alive.
    public static let maximumSeconds = 7 * 24 * 60 * 60

    /// The choices the dashboard offers, besides a custom length.
    public static let choices: [(label: String, grace: KeyGrace)] = [
        ("Now", KeyGrace(uncheckedSeconds: 0)),
        ("1 hour", KeyGrace(uncheckedSeconds: 3600)),
        ("24 hours", KeyGrace(uncheckedSeconds: 86_400)),
        ("7 days", KeyGrace(uncheckedSeconds: maximumSeconds)),
    ]

    private init(uncheckedSeconds: Int) {
        self.seconds = uncheckedSeconds
    }

    /// - Throws: ``KeywayError`` `invalid_input` naming `grace` when `seconds` is negative or
    ///   longer than seven days.
    public init(seconds: Int) throws(KeywayError) {
        guard seconds >= 0, seconds <= Self.maximumSeconds else { throw Self.invalid(field: "grace") }
        self.seconds = seconds
    }

    /// Reads what a person typed: `now` (or `0`), or a whole number with a unit, `s`, `m`,
    /// `h` or `d` (`90s`, `15m`, `24h`, `7d`), up to seven days.
    /// - Throws: ``KeywayError`` `invalid_input` naming `field`.
    public init(parsing text: String, field: String = "grace") throws(KeywayError) {
        let trimmed = text.trimmingCharacters(in: .whitespaces).lowercased()
        if trimmed == "now" || trimmed == "0" {
            self.seconds = 0
            return
        }
        let units: [Character: Int] = ["s": 1, "m": 60, "h": 3600, "d": 86_400]
        guard let unit = trimmed.last.flatMap({ units[$0] }), let count = Int(trimmed.dropLast()), count >= 0,
            count <= Self.maximumSeconds / unit
        else {
            throw Self.invalid(field: field)
        }
        self.seconds = count * unit
    }

    /// When a key rolled at `date` stops working.
    public func end(after date: Date) -> Date {
        date.addingTimeInterval(TimeInterval(seconds))
    }

    /// `now`, or the largest whole unit: `24h`, `90m`, `7d`.
    public var description: String {
        if seconds == 0 { return "now" }
        for (unit, size) in [("d", 86_400), ("h", 3600), ("m", 60)] where seconds % size == 0 {
            return "\(seconds / size)\(unit)"
        }
        return "\(seconds)s"
    }

    private static func invalid(field: String) -> KeywayError {
        KeywayError.invalidInput(
            field: field,
            "The grace period must be 'now' or a whole number of seconds, minutes, hours or days ('90s', '15m', '24h', '7d'), at most 7 days."
        )
    }
}
