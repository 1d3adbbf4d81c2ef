public import Foundation

/// Something a member does in the dashboard that their role may forbid.
///
/// Reading is not listed: every member may read every page of their account, and
/// pages show key hints only, never a key. Acting on oneself (one's password,
/// signing out, switching accounts) is not listed either: every member may.
public enum MemberAction: Sendable, Hashable {
    /// Generate, roll or regenerate the environment's key.
    case manageKey(Environment)
    /// Change the environment's request limit.
    case setRateLimit(Environment)
    /// Add, change, rotate, remove endpoints of the environment, or resend their deliveries.
    case manageWebhooks(Environment)
    /// Invite, change roles, remove members, revoke invitations.
    case manageMembers
    /// Change the account's own rules (who may manage production keys).
    case manageAccount

    /// Every action, for tests and the documentation's table.
    public static let all: [MemberAction] =
        Environment.allCases.flatMap { [.manageKey($0), .setRateLimit($0), .manageWebhooks($0)] } + [.manageMembers, .manageAccount]
}

/// An account's own rules for its members.
public struct AccountPolicy: Sendable, Hashable, Codable {
    /// Whether developers may generate, roll and regenerate the production key (owners always may).
    public var developersManageProductionKeys: Bool
    /// Whether every member must sign in with a second factor; those without one are sent to set it up.
    public var requireTwoFactor: Bool

    /// Builds a policy; the default lets only owners touch production keys and asks for no second factor.
    public init(developersManageProductionKeys: Bool = false, requireTwoFactor: Bool = false) {
        self.developersManageProductionKeys = developersManageProductionKeys
        self.requireTwoFactor = requireTwoFactor
    }
}

extension MemberRole {
    /// Whether a member with this role may do `action` in an account with `policy`.
    ///
    /// The one place the rule lives: every dashboard handler asks it before it changes
    /// anything, and pages ask it to show or hide a button.
    public func may(_ action: MemberAction, under policy: AccountPolicy) -> Bool {
        switch (self, action) {
        case (.owner, _): true
        case (.viewer, _): false
        case (.developer, .manageKey(.production)): policy.developersManageProductionKeys
        case (.developer, .manageKey(.development)), (.developer, .setRateLimit(.development)),
            (.developer, .manageWebhooks(.development)):
            true
        case (.developer, _): false
        }
    }

    /// "Owner", "Developer" or "Viewer".
    public var label: String { rawValue.prefix(1).uppercased() + rawValue.dropFirst() }

    /// What the role may do, in a sentence for the Members page.
    public var summary: String {
        switch self {
        case .owner: "Everything, including members and the account."
        case .developer: "The development key, webhooks and limits; reads production's."
        case .viewer: "Reads every page; changes nothing."
        }
    }
}

extension KeywayError {
    /// The signed-in member's role does not allow the action.
    public static func roleForbids(_ role: MemberRole) -> KeywayError {
        KeywayError(
            .forbiddenByRole,
            "Your role (\(role.rawValue)) does not allow this. Ask an owner of the account.",
            details: ["role": role.rawValue]
        )
    }

    /// The change would leave the account without an owner.
    public static func lastOwner() -> KeywayError {
        KeywayError(.lastOwner, "An account keeps at least one owner: make another member an owner first.")
    }

    /// No such member in this account.
    public static func memberNotFound() -> KeywayError {
        KeywayError(.memberNotFound, "No such member in this account.")
    }

    /// The invitation is unknown, used or expired; the message does not say which.
    public static func invitationNotValid() -> KeywayError {
        KeywayError(
            .invitationNotValid,
            "This invitation link is not valid: it may have been used, revoked or have expired. Ask for a new one."
        )
    }

    /// The email is already a member of the account.
    public static func alreadyAMember() -> KeywayError {
        KeywayError(.alreadyAMember, "This person is already a member of the account.", details: ["field": "email"])
    }
}

/// The identifier of an invitation, `inv_` followed by 20 base62 characters.
public struct InvitationID: RawRepresentable, Sendable, Hashable, Codable, CustomStringConvertible {
    public let rawValue: String

    /// Wraps an identifier read from storage.
    public init(rawValue: String) {
        self.rawValue = rawValue
    }

    /// Makes a new random invitation identifier.
    public static func generate() -> InvitationID {
        InvitationID(rawValue: "inv_" + Base62.randomString(length: 20))
    }

    public var description: String { rawValue }
}

/// An owner's invitation to join an account with a role. Its link carries a random
/// token shown once; storage holds only the token's digest.
public struct Invitation: Sendable, Hashable {
    /// How long a link works.
    public static let lifetime: TimeInterval = 7 * 24 * 3600

    public var id: InvitationID
    public var accountID: AccountID
    /// Lowercased and trimmed, as members sign in with it.
    public var email: String
    public var role: MemberRole
    /// The member who invited, by email (they may leave; the invitation stays theirs).
    public var invitedBy: String
    public var createdAt: Date
    public var expiresAt: Date
    /// When the link was used; a link works once.
    public var acceptedAt: Date?

    /// Builds an invitation value.
    public init(
        id: InvitationID,
        accountID: AccountID,
        email: String,
        role: MemberRole,
        invitedBy: String,
        createdAt: Date,
        expiresAt: Date,
        acceptedAt: Date? = nil
    ) {
        self.id = id
        self.accountID = accountID
        self.email = email
        self.role = role
        self.invitedBy = invitedBy
        self.createdAt = createdAt
        self.expiresAt = expiresAt
        self.acceptedAt = acceptedAt
    }

    /// A new invitation and its link's token, which only the inviter sees.
    public static func make(
        to email: String,
        as role: MemberRole,
        in accountID: AccountID,
        by inviter: String,
        at date: Date
    ) -> (invitation: Invitation, token: String, digest: KeyDigest) {
        let (token, digest) = BrowserToken.generate()
        let created = date.keywayPrecision
        let invitation = Invitation(
            id: .generate(),
            accountID: accountID,
            email: email,
            role: role,
            invitedBy: inviter,
            createdAt: created,
            expiresAt: created.addingTimeInterval(lifetime)
        )
        return (invitation, token, digest)
    }

    /// Whether the link still works at `date`.
    public func isOpen(at date: Date) -> Bool { acceptedAt == nil && date < expiresAt }
}

/// Who accepts an invitation: someone new, who chooses a password, or a member of
/// another account, already signed in.
public enum InvitationAcceptance: Sendable, Hashable {
    case newMember(passwordHash: String)
    case existingMember(MemberID)
}
