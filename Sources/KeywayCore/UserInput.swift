import Foundation

/// Rules for user input shared by every entry point.
///
/// The rules are per Unicode scalar (``isAllowedInText(_:)``, ``isAllowedInUsername(_:)``,
/// ``isTrimmed(_:)``) plus a length bound on what was sent, so that the OpenAPI document can
/// state them exactly as patterns; `OpenAPIPatternTests` checks that it does.
public enum UserInput {
    /// Upper bound on a username or full name as sent, surrounding whitespace included, in Unicode scalars.
    public static let maximumLength = 255

    /// Trims, normalises to NFC and checks a username.
    ///
    /// Usernames that look identical must be one username: composed and decomposed
    /// forms become one (NFC), and characters that show nothing or look like a blank
    /// (format and default-ignorable characters such as zero-width spaces and bidi
    /// overrides, blank letters such as U+2800 and U+3164, spaces other than U+0020)
    /// are refused.
    public static func username(_ raw: String) throws(KeywayError) -> String {
        let value = try text(raw, field: "username")
        guard !value.isEmpty else { throw .invalidInput(field: "username", "username must not be empty.") }
        if let scalar = value.unicodeScalars.first(where: { !isAllowedInUsername($0) }) {
            let code = String(format: "U+%04X", scalar.value)
            throw .invalidInput(
                field: "username",
                "username must not contain invisible, formatting or blank-looking characters (it contains \(code)): two usernames that look the same must be the same."
            )
        }
        return normalized(value)
    }

    /// A username or identifier as received in a lookup, in the form usernames are stored (NFC).
    public static func normalized(_ reference: String) -> String {
        // ASCII is already in NFC, and nearly every reference is ASCII (every identifier is).
        reference.utf8.allSatisfy { $0 < 0x80 } ? reference : reference.precomposedStringWithCanonicalMapping
    }

    /// Letters that render as blanks although no Unicode property says so.
    private static let blankLetters: Set<UInt32> = [0x115F, 0x1160, 0x2800, 0x3164, 0xFFA0]

    /// Whether `scalar` may appear in a username once it is trimmed.
    ///
    /// Emoji joiners and variation selectors (U+200D, U+FE0E, U+FE0F) are refused too, even
    /// inside an emoji: `admin1` and `admin1` + U+200D look the same, and so do two emoji
    /// with and without a joiner that no font knows as one sequence.
    public static func isAllowedInUsername(_ scalar: Unicode.Scalar) -> Bool {
        guard isAllowedInText(scalar) else { return false }
        if scalar == " " { return true }
        let properties = scalar.properties
        return properties.generalCategory != .format && properties.generalCategory != .spaceSeparator
            && !properties.isDefaultIgnorableCodePoint && !blankLetters.contains(scalar.value)
    }

    /// Whether `scalar` may appear in a full name (or a username) once it is trimmed: anything
    /// but control characters, line and paragraph separators and unassigned code points, whose
    /// meaning (and normal form) a later Unicode version may change.
    public static func isAllowedInText(_ scalar: Unicode.Scalar) -> Bool {
        switch scalar.properties.generalCategory {
        case .control, .lineSeparator, .paragraphSeparator, .surrogate, .unassigned: false
        default: true
        }
    }

    /// Whether `scalar` is trimmed from both ends of a username or full name.
    public static func isTrimmed(_ scalar: Unicode.Scalar) -> Bool {
        CharacterSet.whitespacesAndNewlines.contains(scalar)
    }

    /// Trims and checks a full name; an empty name means no name.
    public static func fullName(_ raw: String) throws(KeywayError) -> String? {
        let value = try text(raw, field: "fullName")
        return value.isEmpty ? nil : value
    }

    private static func text(_ raw: String, field: String) throws(KeywayError) -> String {
        // Bounded as sent, before trimming and normalising, so the bound is one a client can check.
        guard raw.unicodeScalars.count <= maximumLength else {
            throw .invalidInput(field: field, "\(field) must be at most \(maximumLength) characters.")
        }
        let value = raw.trimmingCharacters(in: .whitespacesAndNewlines)
        guard value.unicodeScalars.allSatisfy(isAllowedInText) else {
            throw .invalidInput(field: field, "\(field) must not contain control characters or line breaks.")
        }
        return value
    }
}
