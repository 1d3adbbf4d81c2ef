import Foundation
import Hummingbird
import HummingbirdCore
import KeywayCore
import Logging

/// Who is signed in to the dashboard.
struct SignedIn: Sendable {
    let session: DashboardSession
    let member: Member
    let account: Account
    /// Every account the member belongs to, for the header's switcher (this one included).
    var accounts: [(id: AccountID, name: String)] = []
}

/// The context of every dashboard request, signed in or not.
struct DashboardRequestContext: ChildRequestContext {
    var coreContext: CoreRequestContextStorage
    let requestID: String
    let remoteAddress: String
    /// Set by ``DashboardSessionMiddleware`` from the session cookie.
    var signedIn: SignedIn?
    /// A session whose password was right and whose code is still to come.
    var awaitingSecondFactor: (session: DashboardSession, member: Member)?
    /// The CSRF token forms on this page must carry.
    var csrfToken = ""
    /// The fields of a submitted form, once ``CSRFMiddleware`` has verified it.
    var form = HTMLForm()

    init(context: KeywayRequestContext) {
        self.coreContext = context.coreContext
        self.requestID = context.requestID
        self.remoteAddress = context.remoteAddress
    }
}

/// The context of pages that need a signed-in member: the member is not optional.
struct SignedInRequestContext: ChildRequestContext {
    var coreContext: CoreRequestContextStorage
    let requestID: String
    let remoteAddress: String
    let signedIn: SignedIn
    let csrfToken: String
    let form: HTMLForm

    init(context: DashboardRequestContext) throws {
        guard let signedIn = context.signedIn else { throw DashboardRedirect.signIn }
        self.coreContext = context.coreContext
        self.requestID = context.requestID
        self.remoteAddress = context.remoteAddress
        self.signedIn = signedIn
        self.csrfToken = context.csrfToken
        self.form = context.form
    }

    var account: Account { signedIn.account }
    var member: Member { signedIn.member }

    /// Whether the member's role allows `action` in this account (to show a button or not).
    func may(_ action: MemberAction) -> Bool { member.role.may(action, under: account.policy) }

    /// Refuses with 403 `forbidden_by_role` unless the member's role allows `action`: every
    /// handler that changes something asks before it does, whatever the page showed.
    func require(_ action: MemberAction) throws {
        guard may(action) else { throw KeywayError.roleForbids(member.role) }
    }
}

/// Ends a dashboard request with a `303 See Other`.
struct DashboardRedirect: Error {
    let location: String

    static let signIn = DashboardRedirect(location: "/dashboard/signin")
}

/// An error page: the status, a title and a sentence.
struct DashboardErrorPage: Error {
    let status: HTTPResponse.Status
    let title: String
    let message: String

    static let notFound = DashboardErrorPage(status: .notFound, title: "Not found", message: "There is nothing at this address.")
    static let holdsNUL = DashboardErrorPage(
        status: .badRequest,
        title: "Not accepted",
        message: "That form holds a NUL character (U+0000), which no field accepts. Remove it and try again."
    )
    static let forbidden = DashboardErrorPage(
        status: .forbidden,
        title: "Form expired",
        message: "This form could not be verified: it may be stale or come from another site. Go back, reload the page and try again."
    )
}

/// Fields of an `application/x-www-form-urlencoded` body.
struct HTMLForm: Sendable {
    private var fields: [String: String] = [:]
    private var repeated: [String: [String]] = [:]

    init() {}

    /// Parses a body; ``subscript(_:)`` gives a field's first value, ``all(_:)`` every one.
    init(urlEncoded body: String) {
        for pair in body.split(separator: "&") {
            let parts = pair.split(separator: "=", maxSplits: 1, omittingEmptySubsequences: false)
            let name = Self.decode(parts[0])
            guard !name.isEmpty else { continue }
            let value = parts.count > 1 ? Self.decode(parts[1]) : ""
            repeated[name, default: []].append(value)
            if fields[name] == nil { fields[name] = value }
        }
    }

    subscript(_ name: String) -> String? { fields[name] }

    /// Every value of a repeated field (checkboxes), in order.
    func all(_ name: String) -> [String] { repeated[name] ?? [] }

    private static func decode(_ text: Substring) -> String {
        let spaced = text.replacingOccurrences(of: "+", with: " ")
        return spaced.removingPercentEncoding ?? spaced
    }
}
