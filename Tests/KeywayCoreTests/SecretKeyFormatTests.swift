import Foundation
import Testing

@testable import KeywayCore

@Suite struct SecretKeyFormatTests {
    @Test(arguments: Environment.allCases)
    func generatedKeysMatchThePublishedPattern(environment: Environment) throws {
        let regex = try Regex(SecretKeyFormat.pattern)
        for _ in 0..<200 {
            let key = GeneratedSecretKey.generate(for: environment).revealPlaintext()
            #expect(key.wholeMatch(of: regex) != nil, "\(key.prefix(8))… does not match the pattern")
            #expect(key.hasPrefix(SecretKeyFormat.prefix(for: environment)))
        }
    }

    @Test(arguments: Environment.allCases)
    func parsingAGeneratedKeyGivesItsEnvironmentAndDigest(environment: Environment) throws {
        let key = GeneratedSecretKey.generate(for: environment)
        let parsed = try SecretKeyFormat.parse(key.revealPlaintext())
        #expect(parsed.environment == environment)
        #expect(parsed.digest == key.digest)
        #expect(key.digest.bytes.count == 32)
    }

    @Test func keysAreDistinct() {
        let keys = Set((0..<1000).map { _ in GeneratedSecretKey.generate(for: .development).revealPlaintext() })
        #expect(keys.count == 1000)
    }

    @Test func describingAKeyShowsOnlyItsHint() {
        let key = GeneratedSecretKey.generate(for: .production)
        let plaintext = key.revealPlaintext()
        #expect("\(key)" == key.hint)
        #expect(!"\(key)".contains(plaintext))
        #expect(!String(reflecting: key.digest).contains(plaintext))
        #expect(key.hint == "kw_prod_…" + plaintext.suffix(4))
    }

    @Test func everySingleCharacterChangeIsCaughtByTheChecksum() throws {
        let key = GeneratedSecretKey.generate(for: .development).revealPlaintext()
        let bytes = Array(key.utf8)
        let alphabet = Array("0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz".utf8)
        for index in SecretKeyFormat.prefix(for: .development).utf8.count..<bytes.count {
            var mutated = bytes
            mutated[index] = alphabet.first { $0 != bytes[index] }!
            #expect(throws: SecretKeyFormat.Malformation.checksumMismatch) {
                try SecretKeyFormat.parse(String(decoding: mutated, as: UTF8.self))
            }
        }
    }

    @Test func swappingTheEnvironmentPrefixBreaksTheChecksum() {
        let key = GeneratedSecretKey.generate(for: .development).revealPlaintext()
        let forged = "kw_prod_" + key.dropFirst("kw_dev_".count) + "A"
        #expect(throws: SecretKeyFormat.Malformation.self) { try SecretKeyFormat.parse(forged.dropLast()) }
    }

    static let malformedCases: [(String, SecretKeyFormat.Malformation)] = [
        ("", .unknownPrefix),
        ("sk_live_abc", .unknownPrefix),
        ("KW_DEV_" + String(repeating: "a", count: 36), .unknownPrefix),
        ("kw_dev_abc", .wrongLength),
        ("kw_dev_" + String(repeating: "a", count: 37), .wrongLength),
        ("kw_dev_" + String(repeating: "a", count: 35) + "-", .invalidCharacters),
        ("kw_dev_" + String(repeating: "é", count: 18), .invalidCharacters),
        ("kw_prod_" + String(repeating: "a", count: 100), .tooLong),
    ]

    @Test(arguments: malformedCases)
    func malformedKeysAreRefusedWithTheirReason(token: String, reason: SecretKeyFormat.Malformation) {
        #expect(throws: reason) { try SecretKeyFormat.parse(token) }
    }

    @Test func crc32MatchesTheStandardCheckValue() {
        #expect(CRC32.checksum("123456789".utf8) == 0xCBF4_3926)
    }

    @Test func base62EncodingIsFixedWidth() {
        #expect(String(decoding: Base62.encode(0, width: 6), as: UTF8.self) == "000000")
        #expect(String(decoding: Base62.encode(61, width: 6), as: UTF8.self) == "00000z")
        #expect(String(decoding: Base62.encode(UInt64(UInt32.max), width: 6), as: UTF8.self).count == 6)
    }
}

@Suite struct UserInputTests {
    @Test func usernamesAreTrimmed() throws {
        #expect(try NewUser(username: "  alice@example.com \n", fullName: " Alice ").username == "alice@example.com")
        #expect(try NewUser(username: "bob", fullName: " Bob B ").fullName == "Bob B")
        #expect(try NewUser(username: "bob", fullName: "   ").fullName == nil)
    }

    @Test(arguments: ["", "   ", "a\u{0}b", "line\nbreak", "tab\tinside", "bell\u{7}", String(repeating: "x", count: 256)])
    func badUsernamesAreRefused(username: String) {
        #expect(throws: KeywayError.self) { try NewUser(username: username, fullName: nil) }
    }

    @Test func theLimitIs255Characters() throws {
        #expect(try NewUser(username: String(repeating: "x", count: 255), fullName: nil).username.count == 255)
        #expect(try NewUser(username: "名前✓", fullName: "Zoë 👩‍💻").fullName == "Zoë 👩‍💻")
    }

    @Test func validationErrorsNameTheField() {
        do {
            _ = try UserChanges(username: nil, fullName: .some("a\u{1}"))
            Issue.record("expected a validation error")
        } catch {
            #expect(error.code == .invalidInput)
            #expect(error.details["field"] == "fullName")
        }
    }

    @Test func usernamesAreStoredInNFCSoLookalikesAreOne() throws {
        let decomposed = try NewUser(username: "cafe\u{301}", fullName: nil).username
        #expect(Array(decomposed.unicodeScalars) == Array("caf\u{E9}".unicodeScalars))
        #expect(Array(try UserChanges(username: "Zoe\u{308}", fullName: nil).username!.unicodeScalars) == Array("Zo\u{EB}".unicodeScalars))
        #expect(Array(UserInput.normalized("cafe\u{301}").unicodeScalars) == Array("caf\u{E9}".unicodeScalars))
        #expect(UserInput.normalized("plain-ascii") == "plain-ascii")
        // Allowed: letters of every script, emoji (with their joiners), ordinary spaces.
        #expect(try NewUser(username: "Zoë 👩 名前 ❤", fullName: nil).username == "Zoë 👩 名前 ❤")
    }

    @Test(arguments: [
        "zero\u{200B}width", "rtl\u{202E}gnp.exe", "\u{2800}", "\u{3164}", "a\u{115F}", "bom\u{FEFF}", "soft\u{AD}hyphen",
        "word\u{2060}joiner", "no\u{A0}break", "ideographic\u{3000}space", "variation\u{FE0F}", "\u{FFA0}", "join\u{200D}ed", "admin1\u{200D}",
        "admin1\u{FE0F}", "ceo#\u{200D}", "root9\u{FE0E}",
        "👩\u{200D}💻", "❤\u{FE0F}", "👩\u{FE0F}",
    ])
    func invisibleAndBlankLookingCharactersAreRefused(username: String) {
        let error = #expect(throws: KeywayError.self) { try NewUser(username: username, fullName: nil) }
        #expect(error?.details["field"] == "username")
        #expect(error?.message.contains("invisible") == true)
        #expect(throws: KeywayError.self) { try UserChanges(username: username, fullName: nil) }
    }

    @Test func userIDsAreValidatedAndOrderedByTime() throws {
        let early = UserID.generate(at: Date(timeIntervalSince1970: 1_700_000_000))
        let late = UserID.generate(at: Date(timeIntervalSince1970: 1_800_000_000))
        #expect(early < late)
        #expect(UserID(validating: early.rawValue) == early)
        #expect(UserID(validating: "not-an-id") == nil)
        #expect(UserID(validating: early.rawValue.uppercased()) == nil)
    }
}
