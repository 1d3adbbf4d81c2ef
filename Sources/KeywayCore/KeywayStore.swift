public import Foundation

/// Everything Keyway keeps, behind one protocol so SQLite and PostgreSQL
/// behave the same. "Not found" is `nil` or `false`; only real failures throw.
///
/// Every user operation is scoped to one ``EnvironmentID``: an adapter must
/// never let one environment's call see another's rows.
///
/// It is the sum of one protocol per aggregate, so a service names the part it
/// uses (``SecretKeys`` a ``SecretKeyStore``, ``UserTokens`` a ``SigningKeyStore``), and
/// each tells the server about revocations other processes make (``RevocationNotifying``).
public protocol KeywayStore: AccountStore, SecretKeyStore, UserStore, MemberStore, MembershipStore, TwoFactorStore, SigningKeyStore,
    OriginStore,
    RateLimitStore,
    ServiceTokenStore, AuditStore, WebhookStore,
    RevocationNotifying
{
    /// Throws when the store cannot serve requests.
    func checkHealth() async throws
    /// Throws, saying what to do, when the schema is not the one this Keyway needs.
    func requireCurrentSchema() async throws
}

/// Accounts and their two environments.
public protocol AccountStore: Sendable {
    /// Creates an account with its development and production environments.
    func createAccount(name: String, at date: Date) async throws -> Account
    func account(_ id: AccountID) async throws -> Account?
    /// All accounts, oldest first.
    func accounts() async throws -> [Account]
}

/// Secret keys, their revocations and their last use.
public protocol SecretKeyStore: Sendable {
    /// Stores a new key for its environment and, in the same transaction,
    /// revokes the environment's active key. At most one key per environment
    /// is ever active, even when generations race, and at most one is in a grace period.
    /// - Parameters:
    ///   - replacement: Which active key may be replaced; checked in the same transaction.
    ///   - retirement: Whether the active key is revoked now or rolled with a grace period; a
    ///     key still in an earlier grace is revoked now either way.
    ///   - limit: How many keys the environment may generate per window, counted in the
    ///     same transaction as the insert; `nil` for no limit.
    ///   - audit: Who generates it (also the key's `createdBy`); the entries it records
    ///     (``AuditEntry/keyGenerated(_:context:)``, ``AuditEntry/keyReplaced(id:hint:in:revocation:replacement:at:context:)``)
    ///     are written in the same transaction.
    /// - Throws: ``KeywayError`` `account_not_found` when the account does not exist,
    ///   `active_key_changed` when the active key is not the one `replacement` names,
    ///   `too_many_key_generations` when `limit` is reached.
    func insertKeyRevokingPrevious(
        _ key: GeneratedSecretKey,
        for environmentID: EnvironmentID,
        replacing replacement: KeyReplacement,
        retiring retirement: KeyRetirement,
        limit: KeyGenerationLimit?,
        audit: AuditContext,
        at date: Date
    ) async throws -> KeyGeneration
    func secretKey(digest: KeyDigest) async throws -> SecretKeyRecord?
    /// Revokes the key with `digest` now, as leaked, when it is active or in a grace period;
    /// in the same transaction, under the environment's generation lock, with its
    /// `key.reported_leaked` entry (`report`'s details).
    func revokeLeakedKey(digest: KeyDigest, report: LeakReport, audit: AuditContext, at date: Date) async throws -> LeakedKeyOutcome
    /// An account's keys, active and revoked, newest first.
    func secretKeys(for accountID: AccountID) async throws -> [SecretKeyRecord]
    /// Revocations after `sequence`, in order, so other processes can follow them.
    func revocations(after sequence: Int64, limit: Int) async throws -> [KeyRevocation]
    /// The sequence number of the newest revocation, 0 when there is none.
    func latestRevocationSequence() async throws -> Int64
    /// Records when keys were last used; later dates win.
    func recordKeyUsage(_ lastUsed: [SecretKeyID: Date]) async throws
}

/// An environment's end-users.
public protocol UserStore: Sendable {
    /// Creates a user. Its new identifier is never an existing username of the environment.
    /// - Throws: ``KeywayError`` `username_taken`, or `invalid_input` when the username
    ///   is the identifier of a user of the environment.
    func createUser(_ user: NewUser, in environmentID: EnvironmentID, at date: Date) async throws -> User
    /// Creates every user whose username is free (and not a user's identifier), in one transaction.
    func createUsers(_ users: [NewUser], in environmentID: EnvironmentID, at date: Date) async throws -> BatchCreation
    /// Finds a user by identifier, or else by username. Within an environment a
    /// string is never both, so at most one user matches.
    func user(_ reference: String, in environmentID: EnvironmentID) async throws -> User?
    /// Finds a user by identifier only (a verified token's subject, the other-environment hint).
    func user(id: UserID, in environmentID: EnvironmentID) async throws -> User?
    /// Users in identifier order, starting after `cursor`.
    func users(in environmentID: EnvironmentID, after cursor: UserID?, limit: Int) async throws -> UserPage
    /// Changes what `changes` gives, and nothing else, of the user with identifier `id`
    /// (the one a lookup found) in the environment.
    /// - Returns: The updated user, or `nil` when there is no such user.
    /// - Throws: ``KeywayError`` `username_taken`, or `invalid_input` when the new
    ///   username is the identifier of another user of the environment.
    func updateUser(_ id: UserID, in environmentID: EnvironmentID, with changes: UserChanges) async throws -> User?
    /// - Returns: Whether a user was deleted.
    func deleteUser(_ id: UserID, in environmentID: EnvironmentID) async throws -> Bool

    /// Users whose username starts with `prefix`, in username order, after `username`.
    func users(in environmentID: EnvironmentID, usernamePrefix prefix: String, afterUsername username: String?, limit: Int) async throws -> [User]
    /// How many users of the environment have a username starting with `prefix` ("" for all).
    func countUsers(in environmentID: EnvironmentID, usernamePrefix prefix: String) async throws -> Int
}

/// Dashboard members, their accounts and their sessions.
public protocol MemberStore: Sendable {
    /// Creates an account, its two environments and its owner in one transaction, with the
    /// `member.signed_up` entry.
    /// - Throws: ``KeywayError`` `email_taken`.
    func createAccount(
        name: String,
        ownerEmail: String,
        passwordHash: String,
        at date: Date,
        audit: AuditContext
    ) async throws -> (
        Account, Member
    )
    /// The person who signs in with `email`, as a member of the account they joined first,
    /// with their bcrypt hash; `nil` when no one signs in with it.
    func memberCredentials(email: String) async throws -> (member: Member, passwordHash: String)?
    /// The member `id` as a member of `accountID`; `nil` when they are not one.
    func member(_ id: MemberID, in accountID: AccountID) async throws -> Member?
    /// The password hash of a member, to re-check before sensitive actions.
    func passwordHash(of id: MemberID) async throws -> String?
    /// Replaces a member's password and ends all their sessions, in one transaction with `audit`.
    func changePassword(of id: MemberID, to passwordHash: String, audit: AuditEntry) async throws
    /// Stores a session, in one transaction with `audit` (`member.signed_in`; none for a
    /// session still waiting for its second factor).
    func createSession(_ session: DashboardSession, audit: AuditEntry?) async throws
    /// A session that has not expired at `date`.
    func session(digest: KeyDigest, at date: Date) async throws -> DashboardSession?
    /// Ends a session, in one transaction with `audit` (`member.signed_out`).
    func deleteSession(digest: KeyDigest, audit: AuditEntry) async throws
    /// Ends sessions that expired before `date`.
    func deleteExpiredSessions(before date: Date) async throws
}

/// Who belongs to which account, with which role; invitations; the account a session works in.
public protocol MembershipStore: Sendable {
    /// Every account the person `id` belongs to, oldest membership first, with their role in each.
    func memberships(of id: MemberID) async throws -> [Member]
    /// The members of an account, owners first, then by email.
    func members(of accountID: AccountID) async throws -> [Member]
    /// Changes a member's role, in one transaction with its `member.role_changed` entry.
    /// - Returns: The member with the new role; `nil` when they are not a member.
    /// - Throws: ``KeywayError`` `last_owner` when the account's last owner would be demoted,
    ///   decided in the same transaction as the change, so two owners demoting each other
    ///   at once leave one owner.
    func setRole(_ role: MemberRole, of id: MemberID, in accountID: AccountID, audit: AuditContext, at date: Date) async throws -> Member?
    /// Removes a member from an account and ends their sessions in it, in one transaction
    /// with `member.removed`. A person left in no account is deleted, so their email is free.
    /// - Returns: Whether they were a member.
    /// - Throws: ``KeywayError`` `last_owner` for the account's last owner.
    func removeMember(_ id: MemberID, from accountID: AccountID, audit: AuditContext, at date: Date) async throws -> Bool
    /// Changes the account's rules, with `account.policy_changed`.
    func setPolicy(_ policy: AccountPolicy, of accountID: AccountID, audit: AuditContext, at date: Date) async throws

    /// Stores an invitation under its token's digest, with `member.invited`; an open
    /// invitation of the same email to the same account is revoked (its link stops working).
    /// - Throws: ``KeywayError`` `already_a_member`.
    func createInvitation(_ invitation: Invitation, digest: KeyDigest, audit: AuditContext) async throws
    /// The invitation whose link carries a token with this digest, unless revoked (used or expired ones too).
    func invitation(digest: KeyDigest) async throws -> Invitation?
    /// The account's invitations not yet accepted (expired ones too), newest first.
    func openInvitations(of accountID: AccountID) async throws -> [Invitation]
    /// Revokes an invitation not yet accepted, with `member.invitation_revoked`.
    /// - Returns: Whether there was one to revoke.
    func revokeInvitation(_ id: InvitationID, in accountID: AccountID, audit: AuditContext, at date: Date) async throws -> Bool
    /// Uses an invitation: marks it accepted and makes the member, in one transaction with
    /// `member.joined`. The mark is conditional on the link being open, so of two
    /// concurrent acceptances exactly one succeeds.
    /// - Throws: ``KeywayError`` `invitation_not_valid` when the link is unknown, used,
    ///   revoked or expired at `date`; `email_taken` when someone new accepts for an email
    ///   someone already signs in with; `already_a_member`.
    func acceptInvitation(digest: KeyDigest, as acceptance: InvitationAcceptance, at date: Date, audit: AuditContext) async throws -> Member
    /// Moves a session to another account of its member, with a new CSRF token: a form still
    /// open in another tab was made for the previous account and must not act on this one.
    /// - Returns: Whether it moved: `false` when the member does not belong to `accountID`.
    func switchSession(digest: KeyDigest, to accountID: AccountID, csrfToken: String) async throws -> Bool
}

/// A store that hands memberships to another (wrappers that count or hide calls), so each
/// wrapper need not repeat every forwarder.
public protocol ForwardingMembershipStore: MembershipStore {
    var membershipStore: any MembershipStore { get }
}

extension ForwardingMembershipStore {
    public func memberships(of id: MemberID) async throws -> [Member] { try await membershipStore.memberships(of: id) }
    public func members(of accountID: AccountID) async throws -> [Member] { try await membershipStore.members(of: accountID) }
    public func setRole(_ role: MemberRole, of id: MemberID, in accountID: AccountID, audit: AuditContext, at date: Date) async throws -> Member? {
        try await membershipStore.setRole(role, of: id, in: accountID, audit: audit, at: date)
    }
    public func removeMember(_ id: MemberID, from accountID: AccountID, audit: AuditContext, at date: Date) async throws -> Bool {
        try await membershipStore.removeMember(id, from: accountID, audit: audit, at: date)
    }
    public func setPolicy(_ policy: AccountPolicy, of accountID: AccountID, audit: AuditContext, at date: Date) async throws {
        try await membershipStore.setPolicy(policy, of: accountID, audit: audit, at: date)
    }
    public func createInvitation(_ invitation: Invitation, digest: KeyDigest, audit: AuditContext) async throws {
        try await membershipStore.createInvitation(invitation, digest: digest, audit: audit)
    }
    public func invitation(digest: KeyDigest) async throws -> Invitation? { try await membershipStore.invitation(digest: digest) }
    public func openInvitations(of accountID: AccountID) async throws -> [Invitation] { try await membershipStore.openInvitations(of: accountID) }
    public func revokeInvitation(_ id: InvitationID, in accountID: AccountID, audit: AuditContext, at date: Date) async throws -> Bool {
        try await membershipStore.revokeInvitation(id, in: accountID, audit: audit, at: date)
    }
    public func acceptInvitation(
        digest: KeyDigest,
        as acceptance: InvitationAcceptance,
        at date: Date,
        audit: AuditContext
    ) async throws
        -> Member
    {
        try await membershipStore.acceptInvitation(digest: digest, as: acceptance, at: date, audit: audit)
    }
    public func switchSession(digest: KeyDigest, to accountID: AccountID, csrfToken: String) async throws -> Bool {
        try await membershipStore.switchSession(digest: digest, to: accountID, csrfToken: csrfToken)
    }
}

/// The keys that sign user tokens.
public protocol SigningKeyStore: Sendable {
    /// An environment's signing keys, newest first.
    func signingKeys(for environmentID: EnvironmentID) async throws -> [SigningKeyRecord]
    func signingKey(id: String) async throws -> SigningKeyRecord?
    /// Whether anything is sealed under the master key: a signing key or a webhook endpoint's secret.
    func hasSigningKeys() async throws -> Bool
    /// Stores a new signing key. With `retiringActive`, the environment's active key
    /// is retired in the same transaction; without it, when the environment already
    /// has an active key (another instance made one first), that key is returned instead.
    /// A key stored is recorded (`signing_key.rotated`) in the same transaction.
    func insertSigningKey(_ key: SigningKeyRecord, retiringActive: Bool, audit: AuditContext) async throws -> SigningKeyRecord
}

/// The browser origins allowed to call user-token endpoints.
public protocol OriginStore: Sendable {
    /// Browser origins allowed to call user-token endpoints for the environment.
    func allowedOrigins(for environmentID: EnvironmentID) async throws -> [String]
    /// Replaces the environment's origins; only valid, normalised ones can be passed. Recorded
    /// (`origins.changed`) in the same transaction.
    func setAllowedOrigins(_ origins: [BrowserOrigin], for environmentID: EnvironmentID, audit: AuditContext) async throws
    /// Whether any environment allows `origin` (a CORS preflight carries no token).
    func isOriginAllowedAnywhere(_ origin: String) async throws -> Bool
}

/// The credentials of the operator's own services (see ``ServiceTokens``).
public protocol ServiceTokenStore: Sendable {
    /// Stores a new token, recorded (`service_token.created`) in the same transaction.
    /// - Throws: ``KeywayError`` `service_token_name_taken` when an active token has its name.
    func insertServiceToken(_ token: ServiceTokenRecord, audit: AuditContext) async throws -> ServiceTokenRecord
    func serviceToken(digest: KeyDigest) async throws -> ServiceTokenRecord?
    /// Every token, active and revoked, newest first.
    func serviceTokens() async throws -> [ServiceTokenRecord]
    /// Revokes the active token `reference` names, and tells other processes as a key's
    /// revocation does. Recorded (`service_token.revoked`) in the same transaction.
    /// - Returns: The token as revoked, or `nil` when no active token has that id or name.
    func revokeServiceToken(_ reference: ServiceTokenReference, at date: Date, audit: AuditContext) async throws -> ServiceTokenRecord?
}

/// The audit log: every change to credentials and access, written in the transaction of the
/// change it records (the other stores' methods take an ``AuditContext`` or an ``AuditEntry``).
public protocol AuditStore: Sendable {
    /// Appends an entry that records no change of its own: a failed sign-in.
    func recordAudit(_ entry: AuditEntry) async throws
    /// An account's entries, or with `nil` the operator's (service tokens), newest first,
    /// as `query` filters and pages them.
    func auditEntries(for accountID: AccountID?, matching query: AuditQuery) async throws -> [AuditEntry]
    /// Deletes entries older than `date` (`KEYWAY_AUDIT_RETENTION_DAYS`).
    /// - Returns: How many were deleted.
    func deleteAuditEntries(before date: Date) async throws -> Int
    /// Records `key.expired` for each rolled key whose grace ended by `date`, once each
    /// however many instances ask, in the transaction that marks it recorded.
    /// - Returns: How many were recorded.
    func recordExpiredGraces(at date: Date) async throws -> Int
}

extension SecretKeyStore {
    /// Stores a new key revoking `replacement` now, recorded as made by `createdBy`.
    public func insertKeyRevokingPrevious(
        _ key: GeneratedSecretKey,
        for environmentID: EnvironmentID,
        replacing replacement: KeyReplacement,
        limit: KeyGenerationLimit?,
        createdBy: String,
        at date: Date
    ) async throws -> KeyGeneration {
        try await insertKeyRevokingPrevious(
            key,
            for: environmentID,
            replacing: replacement,
            retiring: .revokeNow,
            limit: limit,
            audit: AuditContext(actor: createdBy),
            at: date
        )
    }

    /// Stores a new key replacing whichever key is active, without a limit.
    public func insertKeyRevokingPrevious(
        _ key: GeneratedSecretKey,
        for environmentID: EnvironmentID,
        createdBy: String,
        at date: Date
    ) async throws -> KeyGeneration {
        try await insertKeyRevokingPrevious(key, for: environmentID, replacing: .whicheverIsActive, limit: nil, createdBy: createdBy, at: date)
    }

    /// Stores a new key replacing `replacement`, without a limit.
    public func insertKeyRevokingPrevious(
        _ key: GeneratedSecretKey,
        for environmentID: EnvironmentID,
        replacing replacement: KeyReplacement,
        createdBy: String,
        at date: Date
    ) async throws -> KeyGeneration {
        try await insertKeyRevokingPrevious(key, for: environmentID, replacing: replacement, limit: nil, createdBy: createdBy, at: date)
    }
}

/// A store that tells this process about revocations other processes make as they
/// happen (PostgreSQL's LISTEN/NOTIFY, SQLite's `data_version` watch), so it need not
/// wait for the next poll.
public protocol RevocationNotifying: Sendable {
    /// Listens until cancelled, reconnecting with backoff.
    /// - Parameters:
    ///   - onNotification: Called when revocations may have happened (and once after each (re)connection).
    ///     When it throws, the change counts as not seen: the listener reports itself down,
    ///     so the caller polls, and calls it again once it is back.
    ///   - onStateChange: Called with `true` when listening, `false` when the connection is lost.
    func listenForRevocations(onNotification: @escaping @Sendable () async throws -> Void, onStateChange: @escaping @Sendable (Bool) -> Void) async
}

/// Runs a listening `session` again and again until the task is cancelled: the way
/// every ``RevocationNotifying`` store keeps listening.
///
/// A session calls `connected` once it listens, and returns or throws when it is
/// lost. Between sessions the listener is reported down (so the caller polls) and
/// waits 100 ms, doubling up to 5 s; a session that connects resets the wait.
/// - Parameters:
///   - onStateChange: `true` once a session listens, `false` when one is lost and at the end.
///   - onLoss: Told why a session was lost, unless by cancellation.
public func listenUntilCancelled(
    onStateChange: @escaping @Sendable (Bool) -> Void,
    onLoss: (any Error) -> Void = { _ in },
    _ session: (_ connected: () -> Void) async throws -> Void
) async {
    var backoff: Duration = .milliseconds(100)
    while !Task.isCancelled {
        do {
            try await session {
                onStateChange(true)
                backoff = .milliseconds(100)
            }
        } catch {
            if Task.isCancelled { break }
            onLoss(error)
        }
        onStateChange(false)
        try? await Task.sleep(for: backoff)
        backoff = min(backoff * 2, .seconds(5))
    }
    onStateChange(false)
}

/// The database cannot be used as it is: it needs `keyway migrate`, was written
/// by a newer Keyway, or holds data Keyway did not write. The description says which.
public struct SchemaError: Error, CustomStringConvertible, Sendable {
    public let description: String

    public init(_ description: String) {
        self.description = description
    }
}
