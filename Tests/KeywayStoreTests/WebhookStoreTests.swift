import Foundation
import KeywayCore
import Testing

/// The outbox on every store: an event is written by the transaction of its change, only for the
/// environment's subscribed, enabled endpoints; claims hand each delivery to one process at a time;
/// results, disabling and resending move it along.
@Suite struct WebhookStoreTests {
    static let masterKey = try! MasterKey(bytes: Array(repeating: UInt8(9), count: 32))

    /// Accepts any https host: these tests are about the store, not the URL guard.
    static func webhooks(_ store: any KeywayStore) -> Webhooks {
        Webhooks(store: store, masterKey: masterKey, policy: WebhookURLPolicy(allowInsecure: false, resolve: { _ in [[93, 184, 216, 34]] }))
    }

    static func endpoint(
        _ store: any KeywayStore,
        _ environmentID: EnvironmentID,
        events: Set<WebhookEventType> = Set(WebhookEventType.allCases),
        url: String = "https://hooks.example.com/keyway"
    ) async throws -> WebhookEndpoint {
        try await webhooks(store).createEndpoint(in: environmentID, url: url, events: events, audit: .cli).0
    }

    static func deliveries(_ store: any KeywayStore, _ account: AccountID, _ endpoint: WebhookEndpoint? = nil) async throws -> [WebhookDelivery] {
        try await store.webhookDeliveries(for: account, endpoint: endpoint?.id, limit: 1000)
    }

    @Test(arguments: StoreKind.allCases)
    func userChangesAreEnqueuedForTheirOwnEnvironmentsSubscribersOnly(kind: StoreKind) async throws {
        let (store, account) = try await kind.makeStoreWithAccount()
        let development = EnvironmentID(accountID: account.id, environment: .development)
        let production = EnvironmentID(accountID: account.id, environment: .production)
        let all = try await Self.endpoint(store, development)
        let keysOnly = try await Self.endpoint(store, development, events: [.keyGenerated], url: "https://hooks.example.com/keys")
        let disabled = try await Self.endpoint(store, development, url: "https://hooks.example.com/off")
        _ = try await store.updateWebhookEndpoint(disabled.id, in: account.id, events: nil, enabled: false, audit: .cli, at: Date())
        let productionEndpoint = try await Self.endpoint(store, production)

        let user = try await store.createUser(try NewUser(username: "ada", fullName: "Ada"), in: development, at: Date())
        let renamed = try #require(try await store.updateUser(user.id, in: development, with: try UserChanges(username: "ada2", fullName: nil)))
        #expect(try await store.deleteUser(user.id, in: development))
        // A change that fails writes nothing: the username is taken.
        _ = try await store.createUser(try NewUser(username: "grace", fullName: nil), in: development, at: Date())
        await #expect(throws: KeywayError.self) {
            _ = try await store.createUser(try NewUser(username: "grace", fullName: nil), in: development, at: Date())
        }

        let delivered = try await Self.deliveries(store, account.id, all)
        #expect(delivered.map(\.eventType).sorted() == [.userCreated, .userCreated, .userDeleted, .userUpdated])
        #expect(delivered.allSatisfy { $0.status == .pending && $0.attempts == 0 && $0.id.hasPrefix("msg_") })
        #expect(Set(delivered.map(\.id)).count == 4)
        let updated = try #require(delivered.first { $0.eventType == .userUpdated })
        let body = try #require(JSONSerialization.jsonObject(with: Data(updated.body(for: all).utf8)) as? [String: Any])
        #expect(body["type"] as? String == "user.updated" && body["timestamp"] as? String == updated.createdAt.keywayTimestamp)
        let data = try #require(body["data"] as? [String: Any])
        #expect(data["userId"] as? String == renamed.id.rawValue && data["username"] as? String == "ada2")
        #expect(try await Self.deliveries(store, account.id, keysOnly).isEmpty, "not subscribed to user events")
        #expect(try await Self.deliveries(store, account.id, disabled).isEmpty, "disabled endpoints get nothing new")
        #expect(try await Self.deliveries(store, account.id, productionEndpoint).isEmpty, "production never sees development's users")
    }

    @Test(arguments: StoreKind.allCases)
    func everyEndpointGetsItsOwnDeliveryOfAnEvent(kind: StoreKind) async throws {
        let (store, account) = try await kind.makeStoreWithAccount()
        let development = EnvironmentID(accountID: account.id, environment: .development)
        var endpoints: [WebhookEndpoint] = []
        for index in 0..<3 {
            endpoints.append(try await Self.endpoint(store, development, events: [.userCreated], url: "https://hooks.example.com/\(index)"))
        }
        for username in ["ada", "grace"] {
            _ = try await store.createUser(try NewUser(username: username, fullName: nil), in: development, at: Date())
        }
        let deliveries = try await Self.deliveries(store, account.id)
        #expect(deliveries.count == 6)
        #expect(Set(deliveries.map(\.id)).count == 6, "a delivery's id names one delivery, whatever its endpoint")
        for endpoint in endpoints {
            #expect(try await Self.deliveries(store, account.id, endpoint).count == 2)
        }
    }

    @Test(arguments: StoreKind.allCases)
    func keyChangesAreEnqueuedWithTheirAuditEntries(kind: StoreKind) async throws {
        let (store, account) = try await kind.makeStoreWithAccount()
        let environment = EnvironmentID(accountID: account.id, environment: .production)
        let endpoint = try await Self.endpoint(store, environment)
        let keys = SecretKeys(store: store)
        let (first, _) = try await keys.generate(for: environment, audit: .cli)
        let (second, secondRecord) = try await keys.roll(for: environment, grace: try KeyGrace(parsing: "90s"), audit: .cli)
        var types = try await Self.deliveries(store, account.id, endpoint).map(\.eventType)
        #expect(types.sorted() == [.keyGenerated, .keyGenerated, .keyRolled])

        // key.expiring: once, within the hour before the end, however often and by however many asked.
        #expect(try await store.recordExpiringGraces(at: Date()) == 1)
        #expect(try await store.recordExpiringGraces(at: Date()) == 0)
        let expiring = try #require(try await Self.deliveries(store, account.id, endpoint).first { $0.eventType == .keyExpiring })
        #expect(expiring.payload.contains("expiresAt"))
        // The grace ends: key.revoked, with the reason.
        #expect(try await store.recordExpiredGraces(at: Date().addingTimeInterval(120)) == 1)
        // A leak report revokes the current key: key.leaked.
        let report = LeakReport(url: "https://github.com/acme/app/blob/main/.env", source: "content")
        _ = try await store.revokeLeakedKey(digest: second.digest, report: report, audit: .system, at: Date())
        let all = try await Self.deliveries(store, account.id, endpoint)
        types = all.map(\.eventType)
        #expect(types.sorted() == [.keyExpiring, .keyGenerated, .keyGenerated, .keyLeaked, .keyRevoked, .keyRolled])
        let revoked = try #require(all.first { $0.eventType == .keyRevoked })
        #expect(revoked.payload.contains("expired_after_roll"))
        let leaked = try #require(all.first { $0.eventType == .keyLeaked })
        #expect(leaked.payload.contains(secondRecord.id.rawValue) && leaked.payload.contains("github.com/acme"))
        for key in [first, second] {
            #expect(all.allSatisfy { !$0.payload.contains(key.revealPlaintext()) }, "never a key in a body")
        }
    }

    @Test(arguments: StoreKind.allCases)
    func aGraceCutShortIsNeverAnnouncedAsExpiring(kind: StoreKind) async throws {
        let (store, account) = try await kind.makeStoreWithAccount()
        let environment = EnvironmentID(accountID: account.id, environment: .development)
        let endpoint = try await Self.endpoint(store, environment, events: [.keyExpiring])
        let keys = SecretKeys(store: store)
        _ = try await keys.generate(for: environment, audit: .cli)
        _ = try await keys.roll(for: environment, grace: try KeyGrace(parsing: "2h"), audit: .cli)
        #expect(try await store.recordExpiringGraces(at: Date()) == 0, "two hours away")
        _ = try await keys.generate(for: environment, audit: .cli)  // Regenerate: the grace ends now.
        #expect(try await store.recordExpiringGraces(at: Date().addingTimeInterval(3600)) == 0)
        #expect(try await Self.deliveries(store, account.id, endpoint).isEmpty)
    }

    @Test(arguments: StoreKind.allCases)
    func anEnvironmentHasAtMostTenEndpointsEvenWhenAddedAtOnce(kind: StoreKind) async throws {
        let stores = try await kind.makeSharedStores(3)
        let account = try await stores[0].createAccount(name: "Acme", at: Date())
        let environment = EnvironmentID(accountID: account.id, environment: .development)
        let outcomes = await withTaskGroup(of: Bool.self) { group in
            for index in 0..<15 {
                group.addTask {
                    (try? await Self.endpoint(stores[index % 3], environment, url: "https://hooks.example.com/\(index)")) != nil
                }
            }
            return await group.reduce(into: [Bool]()) { $0.append($1) }
        }
        #expect(outcomes.filter { $0 }.count == Webhooks.endpointLimit)
        #expect(try await stores[0].webhookEndpoints(for: account.id).count == Webhooks.endpointLimit)
        await #expect(throws: KeywayError.self) { _ = try await Self.endpoint(stores[0], environment) }
        // The other environment has its own ten.
        _ = try await Self.endpoint(stores[0], EnvironmentID(accountID: account.id, environment: .production))
    }

    @Test(arguments: StoreKind.allCases)
    func racingClaimsHandEachDeliveryToOneProcess(kind: StoreKind) async throws {
        let stores = try await kind.makeSharedStores(3)
        let account = try await stores[0].createAccount(name: "Acme", at: Date())
        let environment = EnvironmentID(accountID: account.id, environment: .development)
        _ = try await Self.endpoint(stores[0], environment)
        _ = try await stores[0].createUsers((0..<60).map { try NewUser(username: "user\($0)", fullName: nil) }, in: environment, at: Date())
        let now = Date().addingTimeInterval(1)
        let claims = try await withThrowingTaskGroup(of: [String].self) { group in
            for store in stores {
                group.addTask {
                    var mine: [String] = []
                    while true {
                        let batch = try await store.claimWebhookDeliveries(at: now, lease: 30, limit: 7)
                        if batch.isEmpty { return mine }
                        mine += batch.map(\.delivery.id)
                    }
                }
            }
            return try await group.reduce(into: [[String]]()) { $0.append($1) }
        }
        let all = claims.flatMap { $0 }
        #expect(all.count == 60, "every delivery claimed")
        #expect(Set(all).count == 60, "none by two processes")
        // Claimed: nobody takes them again while the lease runs; everyone may once it lapses.
        #expect(try await stores[1].claimWebhookDeliveries(at: now.addingTimeInterval(29), lease: 30, limit: 100).isEmpty)
        #expect(try await stores[2].claimWebhookDeliveries(at: now.addingTimeInterval(31), lease: 30, limit: 100).count == 60)
    }

    @Test(arguments: StoreKind.allCases)
    func attemptsAreRecordedOnlyUnderTheirClaimAndMoveTheDeliveryAlong(kind: StoreKind) async throws {
        let (store, account) = try await kind.makeStoreWithAccount()
        let environment = EnvironmentID(accountID: account.id, environment: .development)
        let endpoint = try await Self.endpoint(store, environment)
        _ = try await store.createUser(try NewUser(username: "ada", fullName: nil), in: environment, at: Date())
        let now = Date().addingTimeInterval(1)
        let claimed = try #require(try await store.claimWebhookDeliveries(at: now, lease: 30, limit: 10).first)
        #expect(claimed.endpoint.id == endpoint.id && claimed.endpoint.url == endpoint.url)

        func record(_ claim: String, status: Int?, next: WebhookAttemptRecord.Next, disable: String? = nil, at: Date) async throws {
            try await store.recordWebhookAttempt(
                WebhookAttemptRecord(
                    deliveryID: claimed.delivery.id,
                    endpointID: endpoint.id,
                    claim: claim,
                    at: at,
                    statusCode: status,
                    error: status == nil ? "timed out" : nil,
                    next: next,
                    disableEndpoint: disable
                )
            )
        }
        try await record("msg_someone_else", status: 200, next: .succeeded, at: now)
        #expect(try await Self.deliveries(store, account.id).first?.status == .pending, "a lapsed claim records nothing")

        try await record(claimed.claim, status: 500, next: .retry(at: now.addingTimeInterval(5)), at: now)
        var delivery = try #require(try await Self.deliveries(store, account.id).first)
        #expect(delivery.status == .pending && delivery.attempts == 1 && delivery.lastStatusCode == 500)
        #expect(delivery.nextAttemptAt?.keywayMilliseconds == now.addingTimeInterval(5).keywayMilliseconds)
        #expect(
            try await store.webhookEndpoint(endpoint.id, in: account.id)?.failingSince?.keywayMilliseconds == now.keywayPrecision.keywayMilliseconds
        )
        #expect(try await store.claimWebhookDeliveries(at: now.addingTimeInterval(4), lease: 30, limit: 10).isEmpty, "not due yet")

        let again = try #require(try await store.claimWebhookDeliveries(at: now.addingTimeInterval(6), lease: 30, limit: 10).first)
        try await store.recordWebhookAttempt(
            WebhookAttemptRecord(
                deliveryID: again.delivery.id,
                endpointID: endpoint.id,
                claim: again.claim,
                at: now.addingTimeInterval(6),
                statusCode: 204,
                error: nil,
                next: .succeeded,
                disableEndpoint: nil
            )
        )
        delivery = try #require(try await Self.deliveries(store, account.id).first)
        #expect(delivery.status == .succeeded && delivery.attempts == 2 && delivery.lastStatusCode == 204 && delivery.nextAttemptAt == nil)
        #expect(try await store.webhookEndpoint(endpoint.id, in: account.id)?.failingSince == nil, "a success ends the failure")

        // Resend: due again now, whatever it was.
        #expect(try await store.resendWebhookDelivery(delivery.id, in: account.id, at: now.addingTimeInterval(7)))
        #expect(try await store.claimWebhookDeliveries(at: now.addingTimeInterval(7), lease: 30, limit: 10).count == 1)
        let other = try await store.createAccount(name: "Globex", at: Date()).id
        #expect(try await store.resendWebhookDelivery(delivery.id, in: other, at: now) == false, "another account's delivery")
    }

    @Test(arguments: StoreKind.allCases)
    func goneDisablesTheEndpointFailingWhatWaitsAndRecordsWhy(kind: StoreKind) async throws {
        let (store, account) = try await kind.makeStoreWithAccount()
        let environment = EnvironmentID(accountID: account.id, environment: .development)
        let endpoint = try await Self.endpoint(store, environment)
        for name in ["ada", "grace"] { _ = try await store.createUser(try NewUser(username: name, fullName: nil), in: environment, at: Date()) }
        let now = Date().addingTimeInterval(1)
        let first = try #require(try await store.claimWebhookDeliveries(at: now, lease: 30, limit: 1).first)
        try await store.recordWebhookAttempt(
            WebhookAttemptRecord(
                deliveryID: first.delivery.id,
                endpointID: endpoint.id,
                claim: first.claim,
                at: now,
                statusCode: 410,
                error: nil,
                next: .failed,
                disableEndpoint: "The endpoint answered 410 Gone."
            )
        )
        let disabled = try #require(try await store.webhookEndpoint(endpoint.id, in: account.id))
        #expect(disabled.disabledAt != nil && disabled.disabledReason == "The endpoint answered 410 Gone.")
        #expect(try await Self.deliveries(store, account.id).allSatisfy { $0.status == .failed })
        #expect(try await store.claimWebhookDeliveries(at: now.addingTimeInterval(100), lease: 30, limit: 10).isEmpty)
        #expect(try await store.resendWebhookDelivery(first.delivery.id, in: account.id, at: now) == false, "not while disabled")
        _ = try await store.createUser(try NewUser(username: "later", fullName: nil), in: environment, at: Date())
        #expect(try await Self.deliveries(store, account.id).count == 2, "nothing new is enqueued for it")
        let log = try await store.auditEntries(for: account.id, matching: AuditQuery(event: .webhookDisabled))
        #expect(log.count == 1 && log.first?.details["reason"] == "The endpoint answered 410 Gone." && log.first?.actor == "system")

        // The owner turns it back on: deliveries flow again, and the failure is forgotten.
        let enabled = try #require(
            try await store.updateWebhookEndpoint(endpoint.id, in: account.id, events: nil, enabled: true, audit: .cli, at: Date())
        )
        #expect(enabled.disabledAt == nil && enabled.disabledReason == nil && enabled.failingSince == nil)
        #expect(try await store.resendWebhookDelivery(first.delivery.id, in: account.id, at: now))
    }

    @Test(arguments: StoreKind.allCases)
    func rotatingKeepsThePreviousSecretForADayAndSecretsAreSealed(kind: StoreKind) async throws {
        let (store, account) = try await kind.makeStoreWithAccount()
        let webhooks = Self.webhooks(store)
        let environment = EnvironmentID(accountID: account.id, environment: .development)
        let (endpoint, first) = try await webhooks.createEndpoint(in: environment, url: "https://hooks.example.com/", events: [], audit: .cli)
        #expect(endpoint.events == Set(WebhookEventType.allCases), "no choice is every event")
        let now = Date()
        let second = try await webhooks.rotateSecret(endpoint.id, in: account.id, audit: .cli, at: now)
        let stored = try #require(try await store.webhookEndpoint(endpoint.id, in: account.id))
        #expect(try webhooks.secrets(of: stored, at: now).map(\.bytes) == [second.bytes, first.bytes])
        #expect(try webhooks.secrets(of: stored, at: now.addingTimeInterval(86_401)).map(\.bytes) == [second.bytes])
        let everything = try await kind.everythingStored(in: store)
        for secret in [first, second] {
            #expect(!everything.contains(secret.serialized) && !everything.contains(secret.bytes.base64EncodedString()))
        }
        await #expect(throws: KeywayError.self) {
            _ = try await webhooks.rotateSecret(endpoint.id, in: try await store.createAccount(name: "Other", at: Date()).id, audit: .cli)
        }
        let events = try await store.auditEntries(for: account.id, matching: AuditQuery()).map(\.event)
        #expect(events.contains(.webhookCreated) && events.contains(.webhookSecretRotated))
        #expect(try await store.hasSigningKeys(), "a sealed secret is stored: the master key must not be replaced")
        #expect(try await store.deleteWebhookEndpoint(endpoint.id, in: account.id, audit: .cli, at: Date()))
        #expect(try await store.webhookEndpoints(for: account.id).isEmpty)
    }

    @Test(arguments: StoreKind.allCases)
    func resendWaitsForAnAttemptInFlightAndStartsTheScheduleAgain(kind: StoreKind) async throws {
        let (store, account) = try await kind.makeStoreWithAccount()
        let environment = EnvironmentID(accountID: account.id, environment: .development)
        let endpoint = try await Self.endpoint(store, environment)
        _ = try await store.createUser(try NewUser(username: "ada", fullName: nil), in: environment, at: Date())
        let now = Date().addingTimeInterval(1)
        let claimed = try #require(try await store.claimWebhookDeliveries(at: now, lease: 30, limit: 1).first)
        #expect(try await store.resendWebhookDelivery(claimed.delivery.id, in: account.id, at: now) == false, "in flight: no second send")
        try await store.recordWebhookAttempt(
            WebhookAttemptRecord(
                deliveryID: claimed.delivery.id,
                endpointID: endpoint.id,
                claim: claimed.claim,
                at: now,
                statusCode: 500,
                error: nil,
                next: .failed,
                disableEndpoint: nil
            )
        )
        #expect(try await store.resendWebhookDelivery(claimed.delivery.id, in: account.id, at: now))
        let resent = try #require(try await Self.deliveries(store, account.id).first)
        #expect(resent.status == .pending && resent.attempts == 0, "a whole schedule again")
    }

    @Test(arguments: StoreKind.allCases)
    func disablingFailsWhatWaitsAndAnInFlightAttemptRecordsNothingOverIt(kind: StoreKind) async throws {
        let (store, account) = try await kind.makeStoreWithAccount()
        let environment = EnvironmentID(accountID: account.id, environment: .development)
        let endpoint = try await Self.endpoint(store, environment)
        for name in ["ada", "grace"] { _ = try await store.createUser(try NewUser(username: name, fullName: nil), in: environment, at: Date()) }
        let now = Date().addingTimeInterval(1)
        let inFlight = try #require(try await store.claimWebhookDeliveries(at: now, lease: 30, limit: 1).first)
        _ = try await store.updateWebhookEndpoint(endpoint.id, in: account.id, events: nil, enabled: false, audit: .cli, at: now)
        try await store.recordWebhookAttempt(
            WebhookAttemptRecord(
                deliveryID: inFlight.delivery.id,
                endpointID: endpoint.id,
                claim: inFlight.claim,
                at: now,
                statusCode: 500,
                error: nil,
                next: .retry(at: now.addingTimeInterval(5)),
                disableEndpoint: nil
            )
        )
        let deliveries = try await Self.deliveries(store, account.id)
        #expect(deliveries.count == 2 && deliveries.allSatisfy { $0.status == .failed && $0.attempts == 0 }, "\(deliveries)")
        #expect(try await store.claimWebhookDeliveries(at: now.addingTimeInterval(60), lease: 30, limit: 10).isEmpty)
    }

    @Test(arguments: StoreKind.allCases)
    func anEndpointURLIsAddedOncePerEnvironmentAndHTTPIsNeverHTTPS(kind: StoreKind) async throws {
        let (store, account) = try await kind.makeStoreWithAccount()
        let environment = EnvironmentID(accountID: account.id, environment: .development)
        _ = try await Self.endpoint(store, environment, url: "https://hooks.example.com/a")
        await #expect(throws: KeywayError.self) { _ = try await Self.endpoint(store, environment, url: "https://hooks.example.com/a") }
        _ = try await Self.endpoint(store, EnvironmentID(accountID: account.id, environment: .production), url: "https://hooks.example.com/a")
        await #expect(throws: KeywayError.self) { _ = try await Self.endpoint(store, environment, url: "HTTP://hooks.example.com/b") }
    }

    @Test(arguments: StoreKind.allCases)
    func aFailureStreakIsRecordedAndRestartsAfterAQuietDay(kind: StoreKind) async throws {
        let (store, account) = try await kind.makeStoreWithAccount()
        let environment = EnvironmentID(accountID: account.id, environment: .development)
        let endpoint = try await Self.endpoint(store, environment)
        func fail(at date: Date) async throws {
            _ = try await store.createUser(try NewUser(username: "u\(date.timeIntervalSince1970)", fullName: nil), in: environment, at: Date())
            let claimed = try #require(try await store.claimWebhookDeliveries(at: date, lease: 30, limit: 1).first)
            try await store.recordWebhookAttempt(
                WebhookAttemptRecord(
                    deliveryID: claimed.delivery.id,
                    endpointID: endpoint.id,
                    claim: claimed.claim,
                    at: date,
                    statusCode: 502,
                    error: nil,
                    next: .failed,
                    disableEndpoint: nil
                )
            )
        }
        let start = Date().addingTimeInterval(1)
        try await fail(at: start)
        try await fail(at: start.addingTimeInterval(3600))
        var stored = try #require(try await store.webhookEndpoint(endpoint.id, in: account.id))
        #expect(stored.failingSince?.keywayMilliseconds == start.keywayPrecision.keywayMilliseconds)
        #expect(stored.lastFailureAt?.keywayMilliseconds == start.addingTimeInterval(3600).keywayPrecision.keywayMilliseconds)
        let later = start.addingTimeInterval(3 * 86_400)
        try await fail(at: later)
        stored = try #require(try await store.webhookEndpoint(endpoint.id, in: account.id))
        #expect(stored.failingSince?.keywayMilliseconds == later.keywayPrecision.keywayMilliseconds, "a quiet day ends a streak")
    }

    @Test(arguments: StoreKind.allCases)
    func aBackloggedEndpointLeavesRoomInEveryClaimForTheOthers(kind: StoreKind) async throws {
        let (store, account) = try await kind.makeStoreWithAccount()
        let environment = EnvironmentID(accountID: account.id, environment: .development)
        let busy = try await Self.endpoint(store, environment, events: [.userCreated], url: "https://hooks.example.com/busy")
        _ = try await store.createUsers((0..<50).map { try NewUser(username: "user\($0)", fullName: nil) }, in: environment, at: Date())
        let quiet = try await Self.endpoint(store, environment, events: [.keyGenerated], url: "https://hooks.example.com/quiet")
        _ = try await SecretKeys(store: store).generate(for: environment, audit: .cli)  // due after the fifty
        let now = Date().addingTimeInterval(1)
        let first = try await store.claimWebhookDeliveries(at: now, lease: 30, limit: 10, perEndpoint: 4, excluding: [])
        #expect(first.filter { $0.endpoint.id == busy.id }.count == 4, "no more than its share")
        #expect(first.filter { $0.endpoint.id == quiet.id }.count == 1, "the later event is not stuck behind the backlog")
        let second = try await store.claimWebhookDeliveries(at: now, lease: 30, limit: 10, perEndpoint: 4, excluding: [busy.id])
        #expect(second.isEmpty, "the busy endpoint is left out; the quiet one has nothing more")
        #expect(try await store.claimWebhookDeliveries(at: now, lease: 30, limit: 10, perEndpoint: 4, excluding: []).count == 4)
    }

    @Test(arguments: StoreKind.allCases)
    func aClaimTakesTheDeliveriesDueLongestAcrossEndpoints(kind: StoreKind) async throws {
        let store = try await kind.makeStore()
        var endpoints: [(environment: EnvironmentID, endpoint: WebhookEndpoint)] = []
        for name in ["A", "B", "C"] {
            let environment = EnvironmentID(accountID: try await store.createAccount(name: name, at: Date()).id, environment: .development)
            endpoints.append(
                (environment, try await Self.endpoint(store, environment, events: [.userCreated], url: "https://hooks.example.com/\(name)"))
            )
        }
        // Endpoints are found in the order of their ids: make the oldest due belong to the last ones.
        endpoints.sort { $0.endpoint.id.rawValue > $1.endpoint.id.rawValue }
        let (first, second, third) = (endpoints[0], endpoints[1], endpoints[2])
        // Due in this order: first, first again, second, third.
        var created: [UserID] = []
        for (index, environment) in [first.environment, first.environment, second.environment, third.environment].enumerated() {
            created.append(try await store.createUser(try NewUser(username: "user\(index)", fullName: nil), in: environment, at: Date()).id)
            try await Task.sleep(for: .milliseconds(5))
        }
        func users(_ claimed: [ClaimedWebhookDelivery]) -> Set<UserID> {
            Set(created.filter { user in claimed.contains { $0.delivery.payload.contains(user.rawValue) } })
        }
        let at = Date().addingTimeInterval(1)
        // One per endpoint: the first endpoint's oldest, then the second's, not the first's next.
        let capped = try await store.claimWebhookDeliveries(at: at, lease: 30, limit: 2, perEndpoint: 1, excluding: [])
        #expect(users(capped) == [created[0], created[2]])
        // Then the first's next and the third's.
        let rest = try await store.claimWebhookDeliveries(at: at, lease: 30, limit: 2, perEndpoint: 4, excluding: [])
        #expect(users(rest) == [created[1], created[3]])
    }

    @Test(arguments: StoreKind.allCases)
    func aLongBacklogAtOneEndpointNeverHoldsUpTheOthers(kind: StoreKind) async throws {
        let (store, account) = try await kind.makeStoreWithAccount()
        let development = EnvironmentID(accountID: account.id, environment: .development)
        let busy = try await Self.endpoint(store, development, events: [.userCreated], url: "https://hooks.example.com/busy")
        // More due deliveries at one endpoint than a claim once looked at (1000), all due first.
        _ = try await store.createUsers((0..<1010).map { try NewUser(username: "user\($0)", fullName: nil) }, in: development, at: Date())
        let quiet = try await Self.endpoint(store, development, events: [.keyGenerated], url: "https://hooks.example.com/quiet")
        let other = EnvironmentID(accountID: try await store.createAccount(name: "Other", at: Date()).id, environment: .production)
        let elsewhere = try await Self.endpoint(store, other, events: [.keyGenerated], url: "https://hooks.example.com/elsewhere")
        _ = try await SecretKeys(store: store).generate(for: development, audit: .cli)
        _ = try await SecretKeys(store: store).generate(for: other, audit: .cli)
        let now = Date().addingTimeInterval(1)

        // With its share in flight the busy endpoint is left out: the others' events go at once.
        let whileBusy = try await store.claimWebhookDeliveries(at: now, lease: 30, limit: 10, perEndpoint: 4, excluding: [busy.id])
        #expect(Set(whileBusy.map(\.endpoint.id)) == [quiet.id, elsewhere.id] && whileBusy.count == 2)
        // Otherwise it gets its share of a claim, and no more.
        let next = try await store.claimWebhookDeliveries(at: now, lease: 30, limit: 10, perEndpoint: 4, excluding: [])
        #expect(next.count == 4 && next.allSatisfy { $0.endpoint.id == busy.id })
    }
}
