import Foundation
import HTTPTypes
import Hummingbird
import KeywayCore
import Logging

// Settings → Rate limits: each environment's request limit.
extension DashboardController {
    @Sendable func rateLimitsPage(_ request: Request, context: SignedInRequestContext) async throws -> Response {
        renderRateLimits(context: context)
    }

    /// Sets the environment's request limit; it applies on this server before the page returns.
    @Sendable func setRateLimit(_ request: Request, context: SignedInRequestContext) async throws -> Response {
        guard let environment = context.parameters.get("environment").flatMap(Environment.init(rawValue:)) else {
            throw DashboardErrorPage.notFound
        }
        try context.require(.setRateLimit(environment))
        let setting: RateLimitSetting
        do {
            setting = try RateLimitSetting(parsing: context.form["requestsPerSecond"] ?? "")
        } catch let error as KeywayError {
            return renderRateLimits(context: context, limitError: (environment, error.message), status: .badRequest)
        }
        let environmentID = EnvironmentID(accountID: context.account.id, environment: environment)
        try await rateLimits.set(setting, for: environmentID, audit: audit(request, context))
        context.logger.info("rate limit set from the dashboard", metadata: ["environment": "\(environment.rawValue)", "limit": "\(setting)"])
        throw DashboardRedirect(location: "/dashboard/settings/rate-limits#\(environment.rawValue)-limits")
    }

    func renderRateLimits(
        context: SignedInRequestContext,
        limitError: (environment: Environment, message: String)? = nil,
        status: HTTPResponse.Status = .ok
    ) -> Response {
        let environments: [[String: Any]] = Environment.allCases.map { environment in
            let limit = Self.describe(
                rateLimits.setting(for: EnvironmentID(accountID: context.account.id, environment: environment)),
                for: environment
            )
            var card: [String: Any] = [
                "environment": environment.rawValue,
                "label": environment.label,
                "csrf": context.csrfToken,
                "limit": limit.text,
                "limitField": limit.field,
                "defaultLimit": RateLimitPolicy.default(for: environment).requestsPerSecond,
                "mayManage": context.may(.setRateLimit(environment)),
                "role": context.member.role.rawValue,
            ]
            if let limitError, limitError.environment == environment { card["limitError"] = limitError.message }
            return card
        }
        return pages.render(
            "rate-limits",
            title: "Rate limits",
            section: .rateLimits,
            csrf: context.csrfToken,
            signedIn: context.signedIn,
            data: ["environments": environments],
            status: status
        )
    }
}
