import Foundation
import HTTPTypes
import Hummingbird
import KeywayCore
import Logging

// Settings → Members: roles, invitations (a link shown once; Keyway sends no email), the
// account's policy; joining through a link; switching between one's accounts.
extension DashboardController {
    @Sendable func membersPage(_ request: Request, context: SignedInRequestContext) async throws -> Response {
        try await renderMembers(context: context)
    }

    @Sendable func inviteMember(_ request: Request, context: SignedInRequestContext) async throws -> Response {
        try context.require(.manageMembers)
        let role = context.form["role"].flatMap(MemberRole.init(rawValue:))
        let email: String
        do {
            email = try MemberInput.email(context.form["email"] ?? "")
        } catch {
            return try await renderMembers(context: context, inviteError: error.message, status: .badRequest)
        }
        guard let role else { return try await renderMembers(context: context, inviteError: "Choose a role.", status: .badRequest) }
        let (invitation, token, digest) = Invitation.make(to: email, as: role, in: context.account.id, by: context.member.email, at: Date())
        do {
            try await store.createInvitation(invitation, digest: digest, audit: audit(request, context))
        } catch let error as KeywayError where error.code == .alreadyAMember {
            return try await renderMembers(context: context, inviteError: error.message, status: .conflict)
        }
        context.logger.info("member invited", metadata: ["invitation.id": "\(invitation.id)", "role": "\(role.rawValue)"])
        return try await renderMembers(context: context, revealedLink: (email, joinLink(request, token: token)))
    }

    @Sendable func revokeInvitation(_ request: Request, context: SignedInRequestContext) async throws -> Response {
        try context.require(.manageMembers)
        guard let id = context.parameters.get("id"),
            try await store.revokeInvitation(InvitationID(rawValue: id), in: context.account.id, audit: audit(request, context), at: Date())
        else { throw DashboardErrorPage.notFound }
        throw DashboardRedirect(location: "/dashboard/settings/members")
    }

    @Sendable func changeRole(_ request: Request, context: SignedInRequestContext) async throws -> Response {
        try context.require(.manageMembers)
        guard let id = context.parameters.get("id") else { throw DashboardErrorPage.notFound }
        guard let role = context.form["role"].flatMap(MemberRole.init(rawValue:)) else {
            return try await renderMembers(context: context, notice: "Choose a role: owner, developer or viewer.", status: .badRequest)
        }
        do {
            guard
                try await store.setRole(role, of: MemberID(rawValue: id), in: context.account.id, audit: audit(request, context), at: Date())
                    != nil
            else { throw DashboardErrorPage.notFound }
        } catch let error as KeywayError where error.code == .lastOwner {
            return try await renderMembers(context: context, notice: error.message, status: .conflict)
        }
        throw DashboardRedirect(location: "/dashboard/settings/members")
    }

    @Sendable func removeMember(_ request: Request, context: SignedInRequestContext) async throws -> Response {
        try context.require(.manageMembers)
        guard let id = context.parameters.get("id") else { throw DashboardErrorPage.notFound }
        do {
            guard try await store.removeMember(MemberID(rawValue: id), from: context.account.id, audit: audit(request, context), at: Date())
            else { throw DashboardErrorPage.notFound }
        } catch let error as KeywayError where error.code == .lastOwner {
            return try await renderMembers(context: context, notice: error.message, status: .conflict)
        }
        context.logger.info("member removed", metadata: ["member.id": "\(id)"])
        // Removing oneself ends one's own session in this account.
        if id == context.member.id.rawValue { throw DashboardRedirect(location: "/dashboard/signin") }
        throw DashboardRedirect(location: "/dashboard/settings/members")
    }

    @Sendable func setAccountPolicy(_ request: Request, context: SignedInRequestContext) async throws -> Response {
        try context.require(.manageAccount)
        let policy = AccountPolicy(
            developersManageProductionKeys: context.form["developersManageProductionKeys"] == "on",
            requireTwoFactor: context.form["requireTwoFactor"] == "on"
        )
        try await store.setPolicy(policy, of: context.account.id, audit: audit(request, context), at: Date())
        throw DashboardRedirect(location: "/dashboard/settings/members#policy")
    }

    /// Moves the session to another account of the member's (the header's switcher).
    @Sendable func switchAccount(_ request: Request, context: SignedInRequestContext) async throws -> Response {
        guard let account = context.form["account"],
            try await store.switchSession(
                digest: context.signedIn.session.digest,
                to: AccountID(rawValue: account),
                csrfToken: BrowserToken.random()
            )
        else { throw DashboardErrorPage.notFound }
        throw DashboardRedirect(location: "/dashboard/settings/api-keys")
    }

    /// The link an invitee opens: the token in the query, which Keyway's request log leaves out.
    func joinLink(_ request: Request, token: String) -> String {
        // Without KEYWAY_PUBLIC_URL, the address the inviter reached Keyway at; such a server is plain http.
        let base = publicURL ?? "http://\(request.head.authority ?? "localhost")"
        return "\(base)/dashboard/join?invitation=\(token)"
    }

    func renderMembers(
        context: SignedInRequestContext,
        revealedLink: (email: String, link: String)? = nil,
        inviteError: String? = nil,
        notice: String? = nil,
        status: HTTPResponse.Status = .ok
    ) async throws -> Response {
        let manages = context.may(.manageMembers)
        let now = Date()
        let members: [[String: Any]] = try await store.members(of: context.account.id).map { member in
            [
                "id": member.id.rawValue,
                "email": member.email,
                "role": member.role.label,
                "isYou": member.id == context.member.id,
                "since": DashboardPages.display(member.createdAt),
                "manages": manages,
                "csrf": context.csrfToken,
                "roleChoices": MemberRole.allCases.map { ["value": $0.rawValue, "label": $0.label, "selected": $0 == member.role] },
            ]
        }
        let invitations: [[String: Any]] = try await store.openInvitations(of: context.account.id).map { invitation in
            [
                "id": invitation.id.rawValue,
                "email": invitation.email,
                "role": invitation.role.label,
                "invitedBy": invitation.invitedBy,
                "expires": DashboardPages.display(invitation.expiresAt),
                "expired": !invitation.isOpen(at: now),
                "manages": manages,
                "csrf": context.csrfToken,
            ]
        }
        var data: [String: Any] = [
            "members": members,
            "invitations": invitations,
            "hasInvitations": !invitations.isEmpty,
            "manages": manages,
            "managesAccount": context.may(.manageAccount),
            "developersManageProductionKeys": context.account.policy.developersManageProductionKeys,
            "requireTwoFactor": context.account.policy.requireTwoFactor,
            "roles": MemberRole.allCases.map { ["value": $0.rawValue, "label": $0.label, "summary": $0.summary] },
        ]
        if let revealedLink { data["revealed"] = ["email": revealedLink.email, "link": revealedLink.link] }
        if let inviteError { data["inviteError"] = inviteError }
        return pages.render(
            "members",
            title: "Members",
            section: .members,
            csrf: context.csrfToken,
            signedIn: context.signedIn,
            notice: notice,
            data: data,
            status: status
        )
    }

    // MARK: Joining

    /// `GET /dashboard/join?invitation=TOKEN`: who is invited, and the form to accept.
    @Sendable func joinPage(_ request: Request, context: DashboardRequestContext) async throws -> Response {
        let token = request.uri.queryParameters["invitation"].map(String.init) ?? ""
        return try await renderJoin(token: token, context: context)
    }

    /// Accepts an invitation: someone new chooses a password; someone who signs in already
    /// (signed in with the invited email, or typing their password) joins with their own.
    @Sendable func join(_ request: Request, context: DashboardRequestContext) async throws -> Response {
        let token = context.form["invitation"] ?? ""
        guard let invitation = try await openInvitation(token) else { throw KeywayError.invitationNotValid() }
        let digest = KeyDigest(hashing: token.utf8)
        let auditContext = audit(request, requestID: context.requestID, remoteAddress: context.remoteAddress, actor: invitation.email)
        let member: Member
        if let signedIn = context.signedIn {
            guard signedIn.member.email == invitation.email else {
                return try await renderJoin(
                    token: token,
                    context: context,
                    formError: "This invitation is for another email address.",
                    status: .forbidden
                )
            }
            member = try await store.acceptInvitation(digest: digest, as: .existingMember(signedIn.member.id), at: Date(), audit: auditContext)
            guard try await store.switchSession(digest: signedIn.session.digest, to: member.accountID, csrfToken: BrowserToken.random()) else {
                throw DashboardRedirect.signIn
            }
            throw DashboardRedirect(location: "/dashboard/settings/api-keys")
        }
        let password = context.form["password"] ?? ""
        if let existing = try await store.memberCredentials(email: invitation.email)?.member {
            // A password alone does not open an account guarded by a second factor: they sign in first.
            guard !existing.hasTwoFactor else {
                return try await renderJoin(token: token, context: context, formError: Self.signInFirst, status: .forbidden)
            }
            // They sign in already: their password, throttled as a sign-in, proves it is them.
            switch try await signInPolicy.signIn(
                email: invitation.email,
                password: password,
                client: clientKey(request, context.remoteAddress),
                audit: auditContext
            ) {
            case .signedIn(let existing):
                member = try await store.acceptInvitation(digest: digest, as: .existingMember(existing.id), at: Date(), audit: auditContext)
            case .unusable(let problem):
                return try await renderJoin(token: token, context: context, formError: problem, status: .badRequest)
            case .wrongCredentials:
                return try await renderJoin(token: token, context: context, formError: "That password is wrong.", status: .unauthorized)
            case .throttled(let refusal):
                return try await renderJoin(
                    token: token,
                    context: context,
                    formError: "Too many failed attempts. Try again in \(refusal.retryAfterSeconds) seconds.",
                    status: .tooManyRequests
                )
            }
        } else {
            do {
                _ = try MemberInput.newPassword(password)
            } catch {
                return try await renderJoin(token: token, context: context, formError: error.message, status: .badRequest)
            }
            let hash = try await signInPolicy.hash(password)
            member = try await store.acceptInvitation(digest: digest, as: .newMember(passwordHash: hash), at: Date(), audit: auditContext)
        }
        context.logger.info("invitation accepted", metadata: ["member.id": "\(member.id)", "account.id": "\(member.accountID)"])
        // Read again, failing closed: a second factor turned on since the check above still asks for its code.
        let awaitingCode = try await store.member(member.id, in: member.accountID)?.hasTwoFactor ?? true
        var response = Response(
            status: .seeOther,
            headers: [.location: awaitingCode ? "/dashboard/signin/code" : "/dashboard/settings/api-keys"]
        )
        response.setCookie(try await sessions.start(for: member, awaitingSecondFactor: awaitingCode, audit: auditContext))
        return response
    }

    static let signInFirst = "This email signs in with a second factor: sign in first, then open this link again."

    /// The invitation a token opens, when it is still open.
    func openInvitation(_ token: String) async throws -> Invitation? {
        guard token.utf8.count == 43, let invitation = try await store.invitation(digest: KeyDigest(hashing: token.utf8)),
            invitation.isOpen(at: Date())
        else { return nil }
        return invitation
    }

    func renderJoin(
        token: String,
        context: DashboardRequestContext,
        formError: String? = nil,
        status: HTTPResponse.Status = .ok
    ) async throws
        -> Response
    {
        guard let invitation = try await openInvitation(token), let account = try await store.account(invitation.accountID) else {
            throw KeywayError.invitationNotValid()
        }
        let existing = try await store.memberCredentials(email: invitation.email)?.member
        var data: [String: Any] = [
            "invitation": token,
            "company": account.name,
            "email": invitation.email,
            "role": invitation.role.label,
            "invitedBy": invitation.invitedBy,
            "minimumPasswordLength": MemberInput.minimumPasswordLength,
        ]
        if let signedIn = context.signedIn {
            data[signedIn.member.email == invitation.email ? "signedInAsInvitee" : "signedInAsOther"] = ["email": signedIn.member.email]
        } else {
            if let existing, existing.hasTwoFactor {
                data["signInFirst"] = Self.signInFirst
            } else {
                data[existing != nil ? "existing" : "new"] = true
            }
        }
        if let formError { data["formError"] = formError }
        return pages.render("join", title: "Join \(account.name)", csrf: context.csrfToken, signedIn: context.signedIn, data: data, status: status)
    }
}
