import Foundation
import Testing

@testable import KeywayCore

/// Signing, the retry schedule, the URL guard and the event bodies, without a store.
@Suite struct WebhookTests {
    /// The Standard Webhooks specification's example: any conforming receiver computes this.
    @Test func signaturesMatchTheSpecificationsExample() throws {
        let secret = try #require(WebhookSecret(serialized: "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"))
        let header = WebhookSecret.signatureHeader(
            id: "msg_p5jXN8AQM9LWM0D4loKWxJek",
            timestamp: 1_614_265_330,
            body: #"{"test": 2432232314}"#,
            secrets: [secret]
        )
        #expect(header == "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=")
    }

    @Test func duringARotationEverySecretSignsSpaceSeparated() throws {
        let old = WebhookSecret.generate()
        let new = WebhookSecret.generate()
        let both = WebhookSecret.signatureHeader(id: "msg_1", timestamp: 1, body: "{}", secrets: [new, old])
        let parts = both.split(separator: " ").map(String.init)
        #expect(parts.count == 2)
        #expect(parts[0] == WebhookSecret.signatureHeader(id: "msg_1", timestamp: 1, body: "{}", secrets: [new]))
        #expect(parts[1] == WebhookSecret.signatureHeader(id: "msg_1", timestamp: 1, body: "{}", secrets: [old]))
    }

    @Test func secretsAreWhsecAndThirtyTwoRandomBytes() throws {
        let secret = WebhookSecret.generate()
        #expect(secret.serialized.hasPrefix("whsec_"))
        #expect(secret.bytes.count == 32)
        #expect(WebhookSecret(serialized: secret.serialized)?.bytes == secret.bytes)
        #expect(WebhookSecret.generate().bytes != secret.bytes)
        #expect(WebhookSecret(serialized: "whsec_" + Data(count: 16).base64EncodedString()) == nil, "fewer than 24 bytes")
        #expect(WebhookSecret(serialized: "sk_" + Data(count: 32).base64EncodedString()) == nil)
    }

    // MARK: Retries

    let now = Date(timeIntervalSince1970: 1_800_000_000)

    @Test func aTwoHundredSucceedsAndAnythingElseIsRetriedOnTheSpecificationsSchedule() {
        #expect(WebhookRetrySchedule.next(afterAttempt: 1, statusCode: 204, retryAfter: nil, failingSince: nil, at: now).next == .succeeded)
        let expected: [TimeInterval] = [5, 300, 1800, 7200, 18_000, 36_000, 50_400, 72_000, 86_400]
        for (index, delay) in expected.enumerated() {
            for (jitter, factor) in [(0.0, 0.9), (0.5, 1.0), (0.999_999, 1.1)] {
                let (next, disable) = WebhookRetrySchedule.next(
                    afterAttempt: index + 1,
                    statusCode: 500,
                    retryAfter: nil,
                    failingSince: now,
                    at: now,
                    jitter: jitter
                )
                #expect(disable == nil)
                guard case .retry(let at) = next else {
                    Issue.record("attempt \(index + 1) should be retried")
                    continue
                }
                #expect(abs(at.timeIntervalSince(now) - delay * factor) < delay * 1e-5 + 0.001)
            }
        }
        #expect(
            WebhookRetrySchedule.next(afterAttempt: 10, statusCode: nil, retryAfter: nil, failingSince: now, at: now).next == .failed,
            "ten attempts in all: immediately and the nine waits"
        )
    }

    @Test func goneDisablesTheEndpointAtOnce() {
        let (next, disable) = WebhookRetrySchedule.next(afterAttempt: 1, statusCode: 410, retryAfter: nil, failingSince: nil, at: now)
        #expect(next == .failed)
        #expect(disable?.contains("410") == true)
    }

    @Test func retryAfterIsHonouredOnTooManyRequestsAndUnavailableOnly() {
        for code in [429, 503] {
            let (next, _) = WebhookRetrySchedule.next(afterAttempt: 1, statusCode: code, retryAfter: 120, failingSince: now, at: now, jitter: 0.5)
            #expect(next == .retry(at: now.addingTimeInterval(120)), "\(code): longer than the 5 s step")
        }
        let (shorter, _) = WebhookRetrySchedule.next(afterAttempt: 2, statusCode: 429, retryAfter: 1, failingSince: now, at: now, jitter: 0.5)
        #expect(shorter == .retry(at: now.addingTimeInterval(300)), "never sooner than the schedule")
        let (other, _) = WebhookRetrySchedule.next(afterAttempt: 1, statusCode: 500, retryAfter: 120, failingSince: now, at: now, jitter: 0.5)
        #expect(other == .retry(at: now.addingTimeInterval(5)))
        let (capped, _) = WebhookRetrySchedule.next(afterAttempt: 1, statusCode: 503, retryAfter: 10 * 86_400, failingSince: now, at: now)
        #expect(capped == .retry(at: now.addingTimeInterval(86_400)))
    }

    @Test func anEndpointFailingForFiveDaysIsDisabled() {
        let almost = now.addingTimeInterval(-5 * 86_400 + 1)
        #expect(WebhookRetrySchedule.next(afterAttempt: 1, statusCode: 500, retryAfter: nil, failingSince: almost, at: now).disable == nil)
        let (next, disable) = WebhookRetrySchedule.next(
            afterAttempt: 1,
            statusCode: 500,
            retryAfter: nil,
            failingSince: now.addingTimeInterval(-5 * 86_400),
            at: now
        )
        #expect(next == .failed)
        #expect(disable?.contains("5 days") == true)
    }

    // MARK: The URL guard

    static func resolver(_ table: [String: [[UInt8]]]) -> WebhookURLPolicy.Resolver {
        { host in
            guard let addresses = table[host] else { throw URLError(.cannotFindHost) }
            return addresses
        }
    }

    static let names: [String: [[UInt8]]] = [
        "hooks.example.com": [[93, 184, 216, 34]],
        "internal.example.com": [[10, 0, 0, 5]],
        "mixed.example.com": [[93, 184, 216, 34], [192, 168, 1, 1]],
        "metadata.example.com": [[169, 254, 169, 254]],
        "localhost": [[127, 0, 0, 1]],
        "127.0.0.1": [[127, 0, 0, 1]],
        "v6.example.com": [[0x20, 0x01, 0x48, 0x60] + Array(repeating: 0, count: 11) + [1]],
        "mapped.example.com": [Array(repeating: 0, count: 10) + [0xFF, 0xFF, 10, 0, 0, 1]],
    ]

    @Test func httpsToPublicAddressesOnlyUnlessInsecureIsAllowed() async throws {
        let strict = WebhookURLPolicy(allowInsecure: false, resolve: Self.resolver(Self.names))
        try await strict.check("https://hooks.example.com/keyway")
        try await strict.check("https://v6.example.com/")
        let notPublic = "must resolve to public addresses only"
        for (url, reason) in [
            ("http://hooks.example.com/", "https"),
            ("HTTP://hooks.example.com/", "https"),
            ("https://internal.example.com/", notPublic),
            ("https://mixed.example.com/", notPublic),
            ("https://metadata.example.com/", notPublic),
            ("https://localhost:8080/", notPublic),
            ("https://mapped.example.com/", notPublic),
            ("https://nowhere.example.com/", notPublic),
            ("https://user:pw@hooks.example.com/", "user or password"),
            ("ftp://hooks.example.com/", "https URL"),
            ("not a url", "https URL"),
            ("https://hooks.example.com/#x", "fragment"),
        ] {
            await #expect(throws: KeywayError.self, "\(url)") {
                do {
                    try await strict.check(url)
                } catch let error as KeywayError {
                    #expect(error.code == .invalidInput)
                    #expect(error.details["field"] == "url")
                    #expect(error.message.contains(reason), "\(url): \(error.message)")
                    #expect(!error.message.contains("10.0") && !error.message.contains("192.168"), "never what a name resolved to")
                    throw error
                }
            }
        }
    }

    @Test func theSchemeIsStoredInLowercase() async throws {
        let strict = WebhookURLPolicy(allowInsecure: false, resolve: Self.resolver(Self.names))
        #expect(try await strict.check("HTTPS://hooks.example.com/In").absoluteString == "https://hooks.example.com/In")
    }

    @Test func anAttemptIsCutAtItsDeadlineEvenWhenItsWorkIgnoresCancellation() async throws {
        // The work never ends: that `within` returns at all is the cut. No clock is read, since
        // a busy machine can delay the answer without the cut failing.
        await #expect(throws: Webhooks.AttemptTimedOut.self) {
            try await Webhooks.within(0.05) { () async throws -> Int in
                await withCheckedContinuation { (_: CheckedContinuation<Void, Never>) in }  // a resolver that never answers
                return 1
            }
        }
        #expect(try await Webhooks.within(5) { 42 } == 42, "work that ends first answers")
        #expect(Webhooks.describe(Webhooks.AttemptTimedOut()) == "No answer within 15 seconds.")
        #expect(Webhooks.describe(URLError(.cannotConnectToHost)) == "The request failed.", "never the system's words")
    }

    @Test func aFailureADayAfterTheLastStartsANewStreak() {
        var endpoint = WebhookEndpoint(
            id: .generate(),
            environmentID: EnvironmentID(accountID: AccountID(rawValue: "acct_1"), environment: .development),
            url: "https://hooks.example.com/",
            events: [],
            sealedSecret: Data(),
            createdAt: now
        )
        #expect(endpoint.failureStreak(failingAt: now) == now, "the first failure")
        endpoint.failingSince = now.addingTimeInterval(-4 * 86_400)
        endpoint.lastFailureAt = now.addingTimeInterval(-3600)
        #expect(endpoint.failureStreak(failingAt: now) == endpoint.failingSince, "failing on")
        endpoint.lastFailureAt = now.addingTimeInterval(-2 * 86_400)
        #expect(endpoint.failureStreak(failingAt: now) == now, "tried again after a quiet day: a new streak")
    }

    @Test func insecureAllowsHTTPToLoopbackOnlyAndHTTPSAnywhere() async throws {
        let development = WebhookURLPolicy(allowInsecure: true, resolve: Self.resolver(Self.names))
        try await development.check("http://127.0.0.1:9000/hook")
        try await development.check("http://localhost/hook")
        try await development.check("https://internal.example.com/")
        await #expect(throws: KeywayError.self) { try await development.check("http://hooks.example.com/") }
        await #expect(throws: KeywayError.self) { try await development.check("http://internal.example.com/") }
    }

    @Test func theAddressClassesRefused() {
        let refused: [[UInt8]] = [
            [0, 0, 0, 0], [10, 1, 2, 3], [100, 64, 0, 1], [127, 0, 0, 2], [169, 254, 1, 1], [172, 16, 0, 1], [172, 31, 255, 255],
            [192, 168, 0, 1], [192, 0, 0, 8], [198, 18, 0, 1], [224, 0, 0, 1], [255, 255, 255, 255],
            Array(repeating: 0, count: 16), Array(repeating: 0, count: 15) + [1], [0xFD, 0x00, 0x0E, 0xC2] + Array(repeating: 0, count: 11) + [0xFE],
            [0xFE, 0x80] + Array(repeating: 0, count: 14), [0xFF, 0x02] + Array(repeating: 0, count: 14),
            [0, 0x64, 0xFF, 0x9B] + Array(repeating: 0, count: 8) + [10, 0, 0, 1],
        ]
        for address in refused {
            #expect(!WebhookURLPolicy.isPublic(address), "\(WebhookURLPolicy.format(address))")
        }
        for address: [UInt8] in [
            [93, 184, 216, 34], [8, 8, 8, 8], [172, 32, 0, 1], [100, 128, 0, 1], [0x26, 0x06] + Array(repeating: 0, count: 14),
        ] {
            #expect(WebhookURLPolicy.isPublic(address), "\(WebhookURLPolicy.format(address))")
        }
    }

    // MARK: Bodies

    @Test func aBodyIsTypeTimestampAndDataWithoutAnySecret() throws {
        let environmentID = EnvironmentID(accountID: AccountID(rawValue: "acct_1"), environment: .production)
        let user = User(id: UserID(rawValue: "usr_1"), username: "ada \"the\" \\ \n first", fullName: nil, createdAt: now)
        let event = WebhookEvent.user(.userCreated, user, in: environmentID, at: now)
        let body = try #require(JSONSerialization.jsonObject(with: Data(event.payload.utf8)) as? [String: Any])
        #expect(Set(body.keys) == ["type", "timestamp", "data"])
        #expect(body["type"] as? String == "user.created")
        #expect(body["timestamp"] as? String == now.auditTimestamp)
        let data = try #require(body["data"] as? [String: Any])
        #expect(data["username"] as? String == user.username, "escaped and read back whole")
        #expect(data["fullName"] is NSNull)
        #expect(data["environment"] as? String == "production")
        #expect(data["accountId"] as? String == "acct_1")
    }

    @Test func keyEventsNameTheKeyByIdHintAndHashNeverByItself() throws {
        let environmentID = EnvironmentID(accountID: AccountID(rawValue: "acct_1"), environment: .development)
        let key = GeneratedSecretKey.generate(for: .development)
        let record = SecretKeyRecord(new: key, for: environmentID, createdBy: "test", at: now)
        let entry = AuditEntry.keyGenerated(record, context: .cli)
        let event = try #require(WebhookEvent(entry))
        #expect(event.type == .keyGenerated)
        #expect(!event.payload.contains(key.revealPlaintext()))
        #expect(event.payload.contains(key.digest.base64))
        #expect(
            WebhookEvent(
                AuditEntry.member(
                    .signedIn,
                    Member(id: MemberID(rawValue: "m"), accountID: environmentID.accountID, email: "a@b.c", role: .owner, createdAt: now),
                    at: now,
                    context: .cli
                )
            ) == nil
        )
    }

    @Test func theAuditEventsThatSendWebhooks() {
        let mapping: [AuditEvent: WebhookEventType] = [
            .keyGenerated: .keyGenerated, .keyRolled: .keyRolled, .keyRevoked: .keyRevoked, .keyExpired: .keyRevoked,
            .keyReportedLeaked: .keyLeaked, .signingKeyRotated: .signingKeyRotated,
        ]
        for event in AuditEvent.allCases {
            let entry = AuditEntry(
                at: now,
                accountID: AccountID(rawValue: "acct_1"),
                environment: .development,
                event: event,
                context: .system
            )
            #expect(WebhookEvent(entry)?.type == mapping[event], "\(event.rawValue)")
        }
    }
}
