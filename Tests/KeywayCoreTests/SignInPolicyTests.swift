import Foundation
import KeywayCore
import Synchronization
import Testing

/// The sign-in policy against a fake store, a counting hasher and a clock moved by hand.
@Suite struct SignInPolicyTests {
    let clock = ManualClock()
    let store = MemberStoreFake()
    let hasher = CountingPasswordHasher()
    let policy: SignInPolicy

    init() {
        let clock = self.clock
        policy = SignInPolicy(store: store, hasher: hasher, ledger: nil, now: { clock.now })
    }

    /// Signs up `email` with `password` from a client of its own.
    func member(_ email: String, password: String = "the real password") async throws -> Member {
        let outcome = try await policy.signUp(company: "Acme", email: email, password: password, client: "signup-" + email, audit: .system)
        guard case .signedUp(let member) = outcome else { throw Unexpected(outcome) }
        return member
    }

    @Test func anUnknownEmailCostsOnePasswordCheckAgainstTheDecoyAsAWrongPasswordDoes() async throws {
        _ = try await member("owner@acme.test")
        let before = hasher.counts

        #expect(try await policy.signIn(email: "owner@acme.test", password: "a wrong password", client: "a", audit: .system) == .wrongCredentials)
        #expect(hasher.counts.verifications == before.verifications + 1)
        #expect(hasher.counts.hashes == before.hashes)
        #expect(try await policy.signIn(email: "nobody@acme.test", password: "a wrong password", client: "b", audit: .system) == .wrongCredentials)
        #expect(hasher.counts.verifications == before.verifications + 2, "an unknown email is checked once, as a known one is")
        // Against the decoy: a hash of its own, made once, never the hash of a real member.
        #expect(hasher.counts.hashes == before.hashes + 1)
        let decoy = try #require(hasher.lastVerified)
        #expect(decoy != store.passwordHashes["owner@acme.test"])
        #expect(try await policy.signIn(email: "someone.else@acme.test", password: "another guess", client: "c", audit: .system) == .wrongCredentials)
        #expect(hasher.counts.verifications == before.verifications + 3)
        #expect(hasher.lastVerified == decoy, "the decoy is made once and reused")
        #expect(hasher.counts.hashes == before.hashes + 1)
    }

    @Test func anEmailIsLockedOutForFifteenMinutesFromItsTenthFailure() async throws {
        let owner = try await member("owner@acme.test")
        let email = AttemptThrottle.Policy.perAccount
        #expect((email.freeFailures, email.lockoutAfter, email.window, email.lockout) == (5, 10, .seconds(900), .seconds(900)))
        func attempt(_ password: String = "a wrong password", client: String) async throws -> SignInPolicy.SignInOutcome {
            try await policy.signIn(email: "Owner@acme.test", password: password, client: client, audit: .system)
        }
        // Every attempt from another client, so only the email's count can refuse.
        let start = clock.now
        for index in 0..<5 { #expect(try await attempt(client: "client \(index)") == .wrongCredentials) }
        for (index, wait) in [1, 2, 4, 8, 16].enumerated() {
            #expect(try await attempt(client: "early \(index)") == .throttled(.init(retryAfterSeconds: wait, lockedOut: false)))
            clock.advance(by: wait)
            #expect(try await attempt(client: "paced \(index)") == .wrongCredentials)
        }
        let checked = hasher.counts.verifications
        #expect(try await attempt(client: "eleventh") == .throttled(.init(retryAfterSeconds: 900, lockedOut: true)))
        // The right password too, for fifteen minutes from the tenth failure (at 31 s), even
        // after the first failures have left the window.
        clock.advance(by: 899)
        #expect(clock.now == start.addingTimeInterval(930))
        let locked = try await attempt("the real password", client: "still locked")
        #expect(locked == .throttled(.init(retryAfterSeconds: 1, lockedOut: true)), "\(locked)")
        #expect(hasher.counts.verifications == checked, "a refused attempt checks no password")

        // Fifteen minutes after the tenth failure the lock is over, and every failure has left the window.
        clock.advance(by: 1)
        #expect(try await attempt("the real password", client: "later") == .signedIn(owner))
    }

    @Test func aClientIsSlowedAfterTwentyFailuresWhateverTheEmailsUntilTheWindowMoves() async throws {
        let client = AttemptThrottle.Policy.perClient
        #expect((client.freeFailures, client.lockoutAfter, client.window, client.lockout) == (20, 40, .seconds(900), .seconds(900)))
        var guesses = 0
        // A new email each time, so only the client's count can refuse.
        func attempt(from client: String = "198.51.100.7") async throws -> SignInPolicy.SignInOutcome {
            guesses += 1
            return try await policy.signIn(email: "guess\(guesses)@acme.test", password: "a wrong password", client: client, audit: .system)
        }
        for _ in 0..<20 { #expect(try await attempt() == .wrongCredentials) }
        let checked = hasher.counts.verifications
        #expect(try await attempt() == .throttled(.init(retryAfterSeconds: 1, lockedOut: false)))
        #expect(hasher.counts.verifications == checked, "a refused attempt checks no password")
        #expect(try await attempt(from: "198.51.100.8") == .wrongCredentials, "another client is not affected")
        // Waits of 1, 2, 4… seconds.
        for wait in [1, 2, 4, 8] {
            clock.advance(by: wait)
            #expect(try await attempt() == .wrongCredentials)
            #expect(try await attempt() == .throttled(.init(retryAfterSeconds: wait * 2, lockedOut: false)))
        }

        // Once the first twenty have left the window (the four paced ones have not), the client
        // has sixteen free attempts, not twenty: the window slides.
        clock.advance(by: 900 - (1 + 2 + 4 + 8))
        for _ in 0..<16 { #expect(try await attempt() == .wrongCredentials) }
        #expect(try await attempt() == .throttled(.init(retryAfterSeconds: 1, lockedOut: false)))
    }

    @Test func reenteringThePasswordIsThrottledPerSessionNotPerEmail() async throws {
        let owner = try await member("owner@acme.test")
        // Someone locks the owner's email out.
        for index in 0..<10 {
            _ = try await policy.signIn(email: "owner@acme.test", password: "guess", client: "attacker \(index)", audit: .system)
            clock.advance(by: 20)
        }
        #expect(try await policy.signIn(email: "owner@acme.test", password: "the real password", client: "owner", audit: .system) != .signedIn(owner))

        let session = KeyDigest(hashing: "a session".utf8)
        #expect(try await policy.confirmPassword("", of: owner.id, session: session) == .missing)
        #expect(try await policy.confirmPassword("the real password", of: owner.id, session: session) == .confirmed)
        for _ in 0..<5 { #expect(try await policy.confirmPassword("wrong", of: owner.id, session: session) == .wrong) }
        #expect(
            try await policy.confirmPassword("the real password", of: owner.id, session: session)
                == .throttled(.init(retryAfterSeconds: 1, lockedOut: false))
        )
        let other = KeyDigest(hashing: "another session".utf8)
        #expect(try await policy.confirmPassword("the real password", of: owner.id, session: other) == .confirmed)
    }
}

extension SignInPolicy.SignInOutcome {
    var isLockedOut: Bool {
        if case .throttled(let refusal) = self { refusal.lockedOut } else { false }
    }
}

struct Unexpected: Error {
    let value: String
    init(_ value: Any) { self.value = String(describing: value) }
}

/// A clock that moves only when told.
final class ManualClock: Sendable {
    private let current = Mutex(Date(timeIntervalSince1970: 1_800_000_000))
    var now: Date { current.withLock { $0 } }
    func advance(by seconds: Int) { current.withLock { $0 = $0.addingTimeInterval(Double(seconds)) } }
}

/// Counts hashes and checks; a hash is the password with a prefix, so checks cost nothing.
final class CountingPasswordHasher: PasswordHasher {
    private let state = Mutex((hashes: 0, verifications: 0, lastVerified: String?.none))
    var counts: (hashes: Int, verifications: Int) { state.withLock { ($0.hashes, $0.verifications) } }
    /// The hash the last check was made against.
    var lastVerified: String? { state.withLock { $0.lastVerified } }

    func hash(_ password: String) async throws -> String {
        state.withLock { $0.hashes += 1 }
        return "test-hash:" + password
    }

    func verify(_ password: String, hash: String) async throws -> Bool {
        state.withLock {
            $0.verifications += 1
            $0.lastVerified = hash
        }
        return hash == "test-hash:" + password
    }
}

/// Members and sessions in memory: what the sign-in policy reads and writes.
final class MemberStoreFake: MemberStore, AuditStore {
    private struct Entry {
        var member: Member
        var passwordHash: String
    }
    private let members = Mutex<[String: Entry]>([:])

    var passwordHashes: [String: String] { members.withLock { $0.mapValues(\.passwordHash) } }

    /// What would be in the audit log.
    let entries = Mutex<[AuditEntry]>([])

    func createAccount(name: String, ownerEmail: String, passwordHash: String, at date: Date, audit: AuditContext) async throws -> (Account, Member) {
        let account = Account(id: .generate(), name: name, createdAt: date)
        let member = Member(id: .generate(), accountID: account.id, email: ownerEmail, role: .owner, createdAt: date)
        try members.withLock { members in
            guard members[ownerEmail] == nil else { throw KeywayError.emailTaken() }
            members[ownerEmail] = Entry(member: member, passwordHash: passwordHash)
        }
        entries.withLock { $0.append(.member(.signedUp, member, at: date, context: audit)) }
        return (account, member)
    }

    func memberCredentials(email: String) async throws -> (member: Member, passwordHash: String)? {
        members.withLock { $0[email].map { (member: $0.member, passwordHash: $0.passwordHash) } }
    }

    func member(_ id: MemberID, in accountID: AccountID) async throws -> Member? {
        members.withLock { $0.values.first { $0.member.id == id && $0.member.accountID == accountID }?.member }
    }

    func passwordHash(of id: MemberID) async throws -> String? {
        members.withLock { $0.values.first { $0.member.id == id }?.passwordHash }
    }

    func changePassword(of id: MemberID, to passwordHash: String, audit: AuditEntry) async throws {
        members.withLock { members in
            for (email, entry) in members where entry.member.id == id { members[email]?.passwordHash = passwordHash }
        }
        entries.withLock { $0.append(audit) }
    }

    func createSession(_ session: DashboardSession, audit: AuditEntry?) async throws { if let audit { entries.withLock { $0.append(audit) } } }
    func session(digest: KeyDigest, at date: Date) async throws -> DashboardSession? { nil }
    func deleteSession(digest: KeyDigest, audit: AuditEntry) async throws { entries.withLock { $0.append(audit) } }
    func deleteExpiredSessions(before date: Date) async throws {}

    func recordAudit(_ entry: AuditEntry) async throws { entries.withLock { $0.append(entry) } }
    func auditEntries(for accountID: AccountID?, matching query: AuditQuery) async throws -> [AuditEntry] {
        entries.withLock { $0.filter { $0.accountID == accountID }.reversed() }
    }
    func deleteAuditEntries(before date: Date) async throws -> Int { 0 }
    func recordExpiredGraces(at date: Date) async throws -> Int { 0 }
}
