import Foundation
import KeywayCore
import Testing

/// The OpenAPI document states the username and full-name rules as patterns, so that
/// generated clients and fuzzers know exactly what the server accepts. They are derived
/// from `UserInput`'s per-scalar rules; this test derives them again and compares.
///
/// After changing a rule (or the Unicode version of the toolchain), run
/// `scripts/openapi-patterns` to write the new patterns into the document.
@Suite struct OpenAPIPatternTests {
    static let documentURL = URL(fileURLWithPath: #filePath)
        .deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
        .appendingPathComponent("Sources/KeywayHTTP/Resources/openapi.json")

    /// What the patterns must be: trimmable blanks, then the checked text, then blanks.
    /// - Parameter forICU: Writes every scalar as `\x{…}`, as `NSRegularExpression` wants, rather than as the document does.
    static func expectedPatterns(forICU: Bool = false) -> [String: String] {
        func characterClass(_ isMember: (Unicode.Scalar) -> Bool) -> String { Self.characterClass(isMember, escapingAll: forICU) }
        let trimmed = characterClass(UserInput.isTrimmed)
        // Inside a username the only blank is U+0020, so a username is words of allowed scalars split by spaces.
        let usernameWord = characterClass { UserInput.isAllowedInUsername($0) && !UserInput.isTrimmed($0) }
        let nameEdge = characterClass { UserInput.isAllowedInText($0) && !UserInput.isTrimmed($0) }
        let nameInside = characterClass(UserInput.isAllowedInText)
        return [
            "Username": "^\(trimmed)*\(usernameWord)+(?: +\(usernameWord)+)*\(trimmed)*$",
            "FullName": "^\(trimmed)*(?:\(nameEdge)(?:\(nameInside)*\(nameEdge))?)?\(trimmed)*$",
        ]
    }

    /// A character class of the scalars `isMember` accepts, as ranges. BMP scalars are written
    /// `\uXXXX`, which ECMA-262 and Python read alike; others appear as themselves.
    static func characterClass(_ isMember: (Unicode.Scalar) -> Bool, escapingAll: Bool) -> String {
        func written(_ value: UInt32) -> String {
            if escapingAll { return "\\x{\(String(value, radix: 16))}" }
            return value <= 0xFFFF ? "\\u" + String(value, radix: 16).leftPadded(to: 4) : String(Character(Unicode.Scalar(value)!))
        }
        var text = "["
        var start: UInt32?
        for value in UInt32(0)...0x11_0000 {
            let member = value < 0x11_0000 && Unicode.Scalar(value).map(isMember) == true
            if member, start == nil { start = value }
            if !member, let first = start {
                text += first == value - 1 ? written(first) : written(first) + "-" + written(value - 1)
                start = nil
            }
        }
        return text + "]"
    }

    @Test func theDocumentStatesTheUsernameAndFullNameRulesExactly() throws {
        let document = try #require(try JSONSerialization.jsonObject(with: Data(contentsOf: Self.documentURL)) as? [String: Any])
        let schemas = try #require((document["components"] as? [String: Any])?["schemas"] as? [String: Any])
        let expected = Self.expectedPatterns()
        if let output = ProcessInfo.processInfo.environment["KEYWAY_OPENAPI_PATTERNS_OUT"] {
            try JSONSerialization.data(withJSONObject: expected).write(to: URL(fileURLWithPath: output))
        }
        for (schema, pattern) in expected {
            let stated = (schemas[schema] as? [String: Any])?["pattern"] as? String
            #expect(stated == pattern, "components.schemas.\(schema).pattern is out of date: run scripts/openapi-patterns")
        }
    }

    @Test func thePatternsAgreeWithTheRulesOnSamples() throws {
        let patterns = Self.expectedPatterns(forICU: true)
        let username = try NSRegularExpression(pattern: patterns["Username"]!)
        let fullName = try NSRegularExpression(pattern: patterns["FullName"]!)
        func matches(_ expression: NSRegularExpression, _ text: String) -> Bool {
            expression.firstMatch(in: text, range: NSRange(text.startIndex..., in: text)) != nil
        }
        for sample in [
            "ada", "  Ada Lovelace\n", "é", "😀", "a  b", "\u{2003}x\u{2003}", "a\u{200D}b", "a\tb", "", " ", "a\u{A0}b", "\u{E000}", "\u{378}",
        ] {
            let acceptedAsUsername = (try? UserInput.username(sample)) != nil
            // An empty name is accepted as no name, so ask whether it throws, not what it returns.
            let acceptedAsName = (try? { () throws(KeywayError) in _ = try UserInput.fullName(sample) }()) != nil
            let matchesUsername = matches(username, sample)
            let matchesName = matches(fullName, sample)
            #expect(matchesUsername == acceptedAsUsername, "username \(sample.debugDescription)")
            #expect(matchesName == acceptedAsName, "fullName \(sample.debugDescription)")
        }
    }
}

extension String {
    fileprivate func leftPadded(to width: Int) -> String {
        String(repeating: "0", count: max(0, width - count)) + self
    }
}
