import Foundation
import KeywayCore
import NIOCore
import Testing

@testable import KeywayHTTP

/// The hand-written JSON of the hot path must be exactly what `JSONEncoder` writes.
@Suite struct JSONWriterTests {
    /// Every ASCII character (controls, quotes, backslash, slash), non-ASCII text,
    /// emoji, a line separator, and the empty string.
    static let awkwardStrings: [String] =
        (0..<128).map { String(UnicodeScalar(UInt8($0))) }
        + ["", "ada", "Ada \"the\" Countess", #"back\slash"#, "a/b", "é😀\u{2028}", "tab\tnew\nline", "\u{7F}\u{1F}"]

    @Test(arguments: awkwardStrings)
    func userMatchesTheEncoder(text: String) throws {
        let user = User(
            id: UserID(rawValue: "65f0a1b2c3d4e5f601234567"),
            username: text,
            fullName: text,
            createdAt: Date(keywayMilliseconds: 1_764_000_000_123)
        )
        try expectSameJSON(UserResponse(user))
    }

    @Test(arguments: [nil, Date(keywayMilliseconds: 1_764_000_000_123)])
    func whoAmIMatchesTheEncoder(expiresAt: Date?) throws {
        let json = try expectSameJSON(
            WhoAmIResponse(accountId: "acct_1", environment: "development", keyHint: "kw_dev_…abcd", expiresAt: expiresAt)
        )
        #expect(json.contains("expiresAt") == (expiresAt != nil))
    }

    @Test func missingFullNameIsNull() throws {
        let user = User(id: UserID(rawValue: "65f0a1b2c3d4e5f601234567"), username: "ada", fullName: nil, createdAt: Date(keywayMilliseconds: 0))
        let json = try expectSameJSON(UserResponse(user))
        #expect(json.contains(#""fullName":null"#))
    }

    @Test(arguments: [0, 1, 3])
    func listsMatchTheEncoder(count: Int) throws {
        let users = (0..<count).map { index in
            UserResponse(
                User(
                    id: UserID(rawValue: "65f0a1b2c3d4e5f60123456\(index)"),
                    username: "user\(index)",
                    fullName: index == 1 ? nil : "Name \"\(index)\"",
                    createdAt: Date(keywayMilliseconds: 1_764_000_000_000 + Int64(index))
                )
            )
        }
        try expectSameJSON(UserListResponse(data: users, nextCursor: count == 3 ? "65f0a1b2c3d4e5f601234562" : nil))
    }

    static let errors: [KeywayError] = [
        KeywayError(.invalidAPIKey, "No such key."),
        .invalidInput(field: "username", "Say \"hi\"\n"),
        .userNotFound("ada", in: .development, existsIn: .production),
        KeywayError(.revokedAPIKey, "Revoked.", details: ["revokedAt": "2026-11-29T13:00:00.000Z", "revocationReason": "regenerated"]),
        KeywayError(.unsupportedAPIVersion, "No.", details: ["supportedVersions": "2023-12,2024-03", "message": "not twice"]),
    ]

    @Test(arguments: errors)
    func errorBodiesMatchTheEncoder(error: KeywayError) throws {
        let written = String(buffer: ErrorBody(error: error, requestID: "req-1").jsonBuffer)
        // The details, then the fields every error has, which a detail may not replace.
        var fields = error.details
        fields["message"] = error.message
        fields["code"] = error.code.rawValue
        fields["requestId"] = "req-1"
        #expect(written == String(decoding: try KeywayJSON.encoder.encode(fields), as: UTF8.self))
        #expect(written.components(separatedBy: #""message":"#).count == 2)
    }

    /// A 429's body, rendered once per limit and wait around the request id, is what the
    /// generic error body writes, whatever the request id holds.
    @Test(arguments: [(100, 1, "req-1"), (1, 2, #"a"b\c"#), (1_000_000, 1, "\u{1}é\n")])
    func quotaExceededBodiesMatchTheErrorBody(limit: Int, retryAfter: Int, requestID: String) {
        let bodies = QuotaExceededBodies()
        let fast = bodies.body(limit: limit, retryAfter: retryAfter, requestID: requestID)
        let again = bodies.body(limit: limit, retryAfter: retryAfter, requestID: requestID)  // from the cache
        let error = KeywayError.rateLimited(limit: limit, retryAfter: retryAfter)
        let generic = ErrorBody(error: error, requestID: requestID, problem: .quotaExceeded).jsonBuffer
        #expect(String(buffer: fast) == String(buffer: generic))
        #expect(String(buffer: again) == String(buffer: generic))
    }

    @discardableResult
    private func expectSameJSON(_ value: some JSONWritable & Encodable) throws -> String {
        let written = String(buffer: value.jsonBuffer)
        let encoded = String(decoding: try KeywayJSON.encoder.encode(value), as: UTF8.self)
        #expect(written == encoded)
        return written
    }
}
