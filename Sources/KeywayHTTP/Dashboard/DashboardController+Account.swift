import Foundation
import HTTPTypes
import Hummingbird
import KeywayCore
import Logging
import Synchronization

// IP addresses and the account page with its password change.
extension DashboardController {
    @Sendable func ipAddressesPage(_ request: Request, context: SignedInRequestContext) -> Response {
        pages.render(
            "ip-addresses",
            title: "IP addresses",
            section: .ipAddresses,
            csrf: context.csrfToken,
            signedIn: context.signedIn,
            data: ["hasAddresses": !egressIPs.isEmpty, "addressText": egressIPs.joined(separator: "\n"), "rows": max(2, egressIPs.count)]
        )
    }

    @Sendable func accountPage(_ request: Request, context: SignedInRequestContext) -> Response {
        renderAccount(context: context)
    }

    @Sendable func changePassword(_ request: Request, context: SignedInRequestContext) async throws -> Response {
        let newPassword: String
        do {
            newPassword = try MemberInput.newPassword(context.form["new"] ?? "")
        } catch {
            return renderAccount(context: context, errors: ["newError": error.message], status: .badRequest)
        }
        let check = try await signInPolicy.changePassword(
            of: context.member,
            session: context.signedIn.session.digest,
            current: context.form["current"] ?? "",
            to: newPassword,
            audit: audit(request, context)
        )
        if let problem = Self.problem(check) {
            return renderAccount(context: context, errors: ["currentError": problem], status: .badRequest)
        }
        context.logger.info("password changed; sessions ended", metadata: ["member.id": "\(context.member.id)"])
        throw DashboardRedirect(location: "/dashboard/signin?notice=password-changed")
    }

    func renderAccount(context: SignedInRequestContext, errors: [String: String] = [:], status: HTTPResponse.Status = .ok) -> Response {
        var data: [String: Any] = [
            "company": context.account.name, "accountId": context.account.id.rawValue, "email": context.member.email,
            "role": context.member.role.rawValue,
            "twoFactor": context.member.hasTwoFactor,
        ]
        data.merge(errors) { $1 }
        return pages.render(
            "account",
            title: "Account",
            section: .account,
            csrf: context.csrfToken,
            signedIn: context.signedIn,
            data: data,
            status: status
        )
    }
}
