public import Foundation
import Synchronization

/// How dashboard members prove who they are: signing up, signing in, and
/// re-entering the password before a sensitive action (a production key, a
/// password change). The HTTP layer reads forms and renders pages; every
/// password hash and every throttle decision is made here.
///
/// Each password check is throttled *before* it is hashed, so a flood of
/// guesses costs a limiter's lookup each, not a bcrypt:
/// - a sign-in counts against its client address (20 free failures, then waits
///   doubling up to 15 minutes) and its email (5 free, locked for 15 minutes
///   from the 10th), client first: a client
///   already refused must not add the emails it invents to the bounded email
///   table, where they would push out (and so unlock) an email that is locked;
/// - a sign-up counts against its client address, since each costs a hash;
/// - a re-entered password counts against the signed-in session, not the
///   email: anyone may fail sign-ins with the owner's email, and must not stop
///   the signed-in owner from replacing a leaked key.
///
/// An attempt is *reserved* when it is checked (see ``AttemptThrottle``): a
/// failure then needs nothing more, a success resets the email's count and
/// releases the client's reservation, and an attempt not made after all (the
/// second limiter refused, storage failed) is released. An unknown email is
/// checked against a decoy hash, so its answer costs one password check, as a
/// wrong password does, and its timing does not tell which emails exist.
public final class SignInPolicy: Sendable {
    /// Failed sign-ins per email address.
    let perEmail: AttemptLimiter
    /// Failed sign-ins, and sign-ups, per client address.
    let perClient: AttemptLimiter
    /// Wrong passwords re-entered per signed-in session.
    let perSession: AttemptLimiter
    private let store: any MemberStore & AuditStore
    private let hasher: any PasswordHasher
    private let now: @Sendable () -> Date
    /// A hash to check unknown emails against. Made on first use: hashing at
    /// start-up would delay every start by a bcrypt.
    private let decoyHash = Mutex<String?>(nil)

    /// - Parameters:
    ///   - store: Where members, their password hashes and accounts live.
    ///   - hasher: Hashes and checks passwords (bcrypt in the server).
    ///   - throttleCapacity: Most keys each limiter remembers in memory (`KEYWAY_THROTTLE_ENTRIES`).
    ///   - ledger: Where instances share their counts (PostgreSQL); `nil` when this
    ///     process sees every attempt (SQLite).
    ///   - now: The clock of the throttles and of new accounts; tests move one by hand.
    public init(
        store: any MemberStore & AuditStore,
        hasher: any PasswordHasher,
        throttleCapacity: Int = 100_000,
        ledger: (any AttemptLedger)?,
        now: @escaping @Sendable () -> Date = Date.init
    ) {
        self.perEmail = AttemptLimiter(policy: .perAccount, capacity: throttleCapacity, ledger: ledger, now: now)
        self.perClient = AttemptLimiter(policy: .perClient, capacity: throttleCapacity, ledger: ledger, now: now)
        self.perSession = AttemptLimiter(policy: .perSession, capacity: throttleCapacity, ledger: ledger, now: now)
        self.store = store
        self.hasher = hasher
        self.now = now
    }

    // MARK: Signing up

    /// What became of a sign-up.
    public enum SignUpOutcome: Sendable, Equatable {
        /// The account was created with `Member` as its owner.
        case signedUp(Member)
        /// Too many sign-ups from the client; nothing was hashed or created.
        case throttled(AttemptThrottle.Refusal)
    }

    /// Creates an account and its owner. Every sign-up costs a password hash, so
    /// each counts against the client, successful or not, before that work.
    /// - Parameters:
    ///   - company: The account's name, checked with ``MemberInput/companyName(_:)``.
    ///   - email: The owner's email, checked with ``MemberInput/email(_:)``.
    ///   - password: The owner's password, checked with ``MemberInput/newPassword(_:)``.
    ///   - client: The client's throttling key: its address, as the HTTP layer reads it.
    ///   - audit: The request, for the `member.signed_up` entry (whose actor is the email).
    /// - Throws: ``KeywayError`` `email_taken`; the store's, the ledger's or the hasher's errors.
    public func signUp(company: String, email: String, password: String, client: String, audit: AuditContext) async throws -> SignUpOutcome {
        do {
            _ = try await perClient.reserve("signup:" + client)
        } catch let refusal as AttemptThrottle.Refusal {
            return .throttled(refusal)
        }
        let hash = try await hasher.hash(password)
        var audit = audit
        audit.actor = email
        let (_, member) = try await store.createAccount(name: company, ownerEmail: email, passwordHash: hash, at: now(), audit: audit)
        return .signedUp(member)
    }

    // MARK: Signing in

    /// What became of a sign-in.
    public enum SignInOutcome: Sendable, Equatable {
        /// The password is the member's.
        case signedIn(Member)
        /// Refused before any throttling or hash, with the reason to show: no member
        /// has such an email or password, so the answer tells nothing.
        case unusable(String)
        /// The email or the password is wrong (which one is not told); the failure stays counted.
        case wrongCredentials
        /// Too many failures for the client or the email; no password was checked.
        case throttled(AttemptThrottle.Refusal)
    }

    /// Hashes a new member's password (one who accepts an invitation).
    public func hash(_ password: String) async throws -> String {
        try await hasher.hash(password)
    }

    /// Checks a member's email and password.
    /// - Parameters:
    ///   - email: As typed; at most ``MemberInput/maximumEmailBytes`` bytes.
    ///   - password: As typed.
    ///   - client: The client's throttling key: its address, as the HTTP layer reads it.
    ///   - audit: The request: a wrong password for a member's email is recorded
    ///     (`member.sign_in_failed`, the member as actor). An unknown email is not: it names no account.
    /// - Throws: The store's, the ledger's or the hasher's errors (the attempt is then uncounted).
    public func signIn(email typedEmail: String, password: String, client: String, audit: AuditContext) async throws -> SignInOutcome {
        // Refused before any throttling: an invented address becomes a throttle key, and keys stay short.
        guard typedEmail.utf8.count <= MemberInput.maximumEmailBytes else {
            return .unusable("Enter an email address of at most \(MemberInput.maximumEmailBytes) bytes.")
        }
        // No member has such a password (bcrypt would check a shorter one), so it is refused unhashed.
        if let problem = MemberInput.unusablePassword(password) { return .unusable(problem) }
        let email = (try? MemberInput.email(typedEmail)) ?? typedEmail.lowercased()
        let emailKey = "signin-email:" + email
        // Reserved before the password hash, atomically: concurrent attempts cannot all pass
        // the check before one is counted, and a flood of attempts costs no hash. The client first
        // (see the type's documentation).
        let reservations: [Reserved]
        do {
            reservations = try await reserve([(perClient, "signin-client:" + client), (perEmail, emailKey)])
        } catch let refusal as AttemptThrottle.Refusal {
            return .throttled(refusal)
        }
        let credentials: (member: Member, passwordHash: String)?
        let valid: Bool
        do {
            credentials = try await store.memberCredentials(email: email)
            // An unknown email costs one check too, against the decoy.
            let hash: String
            if let stored = credentials?.passwordHash { hash = stored } else { hash = try await decoy() }
            valid = try await hasher.verify(password, hash: hash)
        } catch {
            await release(reservations)
            throw error
        }
        // A failure stays counted: its reservation was the count.
        guard let member = credentials?.member, valid, !password.isEmpty else {
            if let member = credentials?.member {
                var audit = audit
                audit.actor = member.email
                // Audit times are the wall clock's, like every other entry's; `now` paces the throttles.
                try await store.recordAudit(.member(.signInFailed, member, at: Date(), context: audit))
            }
            return .wrongCredentials
        }
        try await perEmail.reset(emailKey)
        // A success is no failure of the network it came from.
        await release(reservations.filter { $0.reservation.key != emailKey })
        return .signedIn(member)
    }

    // MARK: Re-entering the password

    /// What became of a re-entered password, or of a second-factor code.
    public enum PasswordCheck: Sendable, Equatable {
        /// The password is the member's.
        case confirmed
        /// No password was entered; nothing was counted.
        case missing
        /// The password is not the member's.
        case wrong
        /// Too many wrong passwords in this session; no password was checked.
        case throttled(AttemptThrottle.Refusal)
    }

    /// Checks the signed-in member's password again, before a sensitive action,
    /// throttled per session.
    /// - Parameters:
    ///   - password: As typed.
    ///   - member: The signed-in member.
    ///   - session: The digest of the session the member is signed in with.
    /// - Throws: The store's, the ledger's or the hasher's errors (the attempt is then uncounted).
    public func confirmPassword(_ password: String, of member: MemberID, session: KeyDigest) async throws -> PasswordCheck {
        if password.isEmpty { return .missing }
        // No member has such a password; refused unhashed and uncounted.
        guard MemberInput.unusablePassword(password) == nil else { return .wrong }
        return try await confirmInSession(session) {
            guard let hash = try await store.passwordHash(of: member) else { return false }
            return try await hasher.verify(password, hash: hash)
        }
    }

    /// Replaces the signed-in member's password once the current one is confirmed
    /// (as ``confirmPassword(_:of:session:)``); every session of the member ends.
    /// - Parameters:
    ///   - member: The signed-in member.
    ///   - session: The digest of the session the member is signed in with.
    ///   - current: The current password, as typed.
    ///   - newPassword: The new password, checked with ``MemberInput/newPassword(_:)``.
    ///   - audit: The request, for the `member.password_changed` entry.
    /// - Returns: ``PasswordCheck/confirmed`` when the password was changed, else why not.
    /// - Throws: The store's, the ledger's or the hasher's errors.
    public func changePassword(
        of member: Member,
        session: KeyDigest,
        current: String,
        to newPassword: String,
        audit: AuditContext
    ) async throws -> PasswordCheck {
        let check = try await confirmPassword(current, of: member.id, session: session)
        guard check == .confirmed else { return check }
        try await store.changePassword(
            of: member.id,
            to: try await hasher.hash(newPassword),
            audit: .member(.passwordChanged, member, at: Date(), context: audit)
        )
        return .confirmed
    }

    // MARK: The second factor

    /// Checks a second factor at sign-in — `verify` compares a code or uses a recovery code —
    /// throttled as a password is: per client address and per member (5 free failures, locked
    /// for 15 minutes from the 10th), reserved before `verify` runs.
    /// - Returns: ``PasswordCheck/confirmed`` or why not; `verify` is not run when throttled.
    public func checkSecondFactor(of member: MemberID, client: String, _ verify: () async throws -> Bool) async throws -> PasswordCheck {
        let memberKey = "signin-code:" + member.rawValue
        let reservations: [Reserved]
        do {
            reservations = try await reserve([(perClient, "signin-client:" + client), (perEmail, memberKey)])
        } catch let refusal as AttemptThrottle.Refusal {
            return .throttled(refusal)
        }
        let valid: Bool
        do {
            valid = try await verify()
        } catch {
            await release(reservations)
            throw error
        }
        guard valid else { return .wrong }
        try await perEmail.reset(memberKey)
        await release(reservations.filter { $0.reservation.key != memberKey })
        return .confirmed
    }

    /// Checks what is re-entered before a sensitive action — a password, or a second-factor code
    /// (`verify` compares it) — throttled per session: anyone may fail sign-ins with a member's
    /// email, and must not stop the signed-in member from replacing a leaked key.
    public func confirmInSession(_ session: KeyDigest, _ verify: () async throws -> Bool) async throws -> PasswordCheck {
        let sessionKey = "reauth-session:" + session.bytes.map { String(format: "%02x", $0) }.joined()
        let reservation: AttemptThrottle.Reservation
        do {
            reservation = try await perSession.reserve(sessionKey)
        } catch let refusal as AttemptThrottle.Refusal {
            return .throttled(refusal)
        }
        let valid: Bool
        do {
            valid = try await verify()
        } catch {
            await release([Reserved(limiter: perSession, reservation: reservation)])
            throw error
        }
        guard valid else { return .wrong }
        try await perSession.reset(sessionKey)
        return .confirmed
    }

    // MARK: Reservations

    private struct Reserved {
        let limiter: AttemptLimiter
        let reservation: AttemptThrottle.Reservation
    }

    /// Reserves an attempt with each limiter, or none: when one refuses, those made are released.
    private func reserve(_ attempts: [(AttemptLimiter, String)]) async throws -> [Reserved] {
        var made: [Reserved] = []
        do {
            for (limiter, key) in attempts { made.append(Reserved(limiter: limiter, reservation: try await limiter.reserve(key))) }
        } catch {
            await release(made)
            throw error
        }
        return made
    }

    /// Uncounts attempts that were not made. Best effort: one left counted only errs towards refusing.
    private func release(_ reservations: [Reserved]) async {
        for reserved in reservations { try? await reserved.limiter.release(reserved.reservation) }
    }

    private func decoy() async throws -> String {
        if let hash = decoyHash.withLock({ $0 }) { return hash }
        let hash = try await hasher.hash(BrowserToken.random())
        decoyHash.withLock { $0 = hash }
        return hash
    }
}
