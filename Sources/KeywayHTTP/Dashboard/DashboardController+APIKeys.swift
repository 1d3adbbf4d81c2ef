import Foundation
import HTTPTypes
import Hummingbird
import KeywayCore
import Logging
import Synchronization

// Settings → API Keys: generating, rolling, revealing once, and the password re-check.
extension DashboardController {
    @Sendable func keysPage(_ request: Request, context: SignedInRequestContext) async throws -> Response {
        let confirming = request.uri.queryParameters["confirm"].flatMap { Environment(rawValue: String($0)) }
        let rolling = request.uri.queryParameters["roll"].flatMap { Environment(rawValue: String($0)) }
        let notice: String? =
            request.uri.queryParameters["notice"] == "stale" ? "The key changed since that page was loaded, so nothing was generated." : nil
        return try await renderKeys(context: context, confirming: confirming, rolling: rolling, notice: notice)
    }

    /// Roll…: a new key now, the current one until the chosen grace ends (at most 7 days).
    @Sendable func rollKey(_ request: Request, context: SignedInRequestContext) async throws -> Response {
        guard let environment = context.parameters.get("environment").flatMap(Environment.init(rawValue:)) else {
            throw DashboardErrorPage.notFound
        }
        try context.require(.manageKey(environment))
        let environmentID = EnvironmentID(accountID: context.account.id, environment: environment)
        let active = try await activeKeys(context.account.id)[environment]
        guard let active, context.form["current"] == active.id.rawValue else {
            throw DashboardRedirect(location: "/dashboard/settings/api-keys?notice=stale")
        }
        let choice = context.form["grace"] ?? ""
        let text = choice == "custom" ? context.form["customGrace"] ?? "" : choice
        let grace: KeyGrace
        switch Result(catching: { () throws(KeywayError) in try KeyGrace(parsing: text, field: "customGrace") }) {
        case .success(let parsed): grace = parsed
        case .failure(let error):
            return try await renderKeys(context: context, rolling: environment, rollError: error.message, status: .badRequest)
        }
        if environment == .production {
            if let problem = try await recheckIdentity(context: context) {
                return try await renderKeys(context: context, rolling: environment, passwordError: problem, status: .badRequest)
            }
        }
        let key: GeneratedSecretKey
        do {
            key = try await keys.roll(for: environmentID, replacing: .only(active.id), grace: grace, audit: audit(request, context)).key
        } catch let error as KeywayError where error.code == .activeKeyChanged {
            throw DashboardRedirect(location: "/dashboard/settings/api-keys?notice=stale")
        } catch let error as KeywayError where error.code == .tooManyKeyGenerations {
            var response = try await renderKeys(context: context, notice: error.message, status: .tooManyRequests)
            response.headers[.retryAfter] = error.details["retryAfter"]
            return response
        }
        context.logger.info(
            "key rolled from the dashboard",
            metadata: ["environment": "\(environment.rawValue)", "key.hint": "\(key.hint)", "grace": "\(grace)"]
        )
        return try await renderKeys(context: context, revealed: key)
    }

    @Sendable func generateKey(_ request: Request, context: SignedInRequestContext) async throws -> Response {
        guard let environment = context.parameters.get("environment").flatMap(Environment.init(rawValue:)) else {
            throw DashboardErrorPage.notFound
        }
        try context.require(.manageKey(environment))
        let environmentID = EnvironmentID(accountID: context.account.id, environment: environment)
        let active = try await activeKeys(context.account.id)[environment]
        // The form names the key it was shown with; a resubmitted form (a reload) regenerates nothing.
        guard context.form["current"] == (active?.id.rawValue ?? "none") else {
            throw DashboardRedirect(location: "/dashboard/settings/api-keys?notice=stale")
        }
        let needsConfirmation = active != nil || environment == .production
        guard !needsConfirmation || context.form["confirm"] == "yes" else {
            throw DashboardRedirect(location: "/dashboard/settings/api-keys?confirm=\(environment.rawValue)#\(environment.rawValue)-card")
        }
        if environment == .production {
            if let problem = try await recheckIdentity(context: context) {
                return try await renderKeys(context: context, confirming: environment, passwordError: problem, status: .badRequest)
            }
        }
        let key: GeneratedSecretKey
        do {
            // Checked again in the store's transaction: two submissions of one page
            // (a double-click, two tabs) must not both generate, or one shows a dead key.
            key = try await keys.generate(for: environmentID, replacing: .only(active?.id), audit: audit(request, context)).key
        } catch let error as KeywayError where error.code == .activeKeyChanged {
            throw DashboardRedirect(location: "/dashboard/settings/api-keys?notice=stale")
        } catch let error as KeywayError where error.code == .tooManyKeyGenerations {
            context.logger.notice("key generation refused: limit reached", metadata: ["environment": "\(environment.rawValue)"])
            var response = try await renderKeys(context: context, notice: error.message, status: .tooManyRequests)
            response.headers[.retryAfter] = error.details["retryAfter"]
            return response
        }
        context.logger.info("key generated from the dashboard", metadata: ["environment": "\(environment.rawValue)", "key.hint": "\(key.hint)"])
        return try await renderKeys(context: context, revealed: key)
    }

    /// What the page says about a limit, and what its form field shows.
    static func describe(_ setting: RateLimitSetting, for environment: Environment) -> (text: String, field: String) {
        switch setting {
        case .default:
            ("\(RateLimitPolicy.default(for: environment).requestsPerSecond) requests a second (the default)", "default")
        case .off: ("No limit", "none")
        case .requestsPerSecond(let value): ("\(value) requests a second", String(value))
        }
    }

    /// Checks the signed-in member's password again (``SignInPolicy``, throttled per session).
    /// - Returns: What to tell the member, or `nil` when the password is right.
    func recheckPassword(_ password: String, context: SignedInRequestContext) async throws -> String? {
        Self.problem(try await signInPolicy.confirmPassword(password, of: context.member.id, session: context.signedIn.session.digest))
    }

    /// What to tell a member whose re-entered password was not confirmed; `nil` when it was.
    static func problem(_ check: SignInPolicy.PasswordCheck) -> String? {
        switch check {
        case .confirmed: nil
        case .missing: "Enter your password to continue."
        case .wrong: "That password is wrong."
        case .throttled(let refusal): "Too many wrong passwords. Try again in \(refusal.retryAfterSeconds) seconds."
        }
    }

    func activeKeys(_ account: AccountID) async throws -> [Environment: SecretKeyRecord] {
        var active: [Environment: SecretKeyRecord] = [:]
        for record in try await store.secretKeys(for: account) where record.isActive {
            active[record.environmentID.environment] = record
        }
        return active
    }

    /// How long the API Keys page shows that a key was revoked as leaked: 30 days.
    static let leakShownFor: TimeInterval = 30 * 86_400

    /// "3 h 12 min", "42 s": how long until `end`, for a grace's countdown.
    static func remaining(until end: Date, from date: Date) -> String {
        let seconds = max(0, Int(end.timeIntervalSince(date).rounded(.up)))
        let (days, hours, minutes) = (seconds / 86_400, seconds % 86_400 / 3600, seconds % 3600 / 60)
        if days > 0 { return "\(days) d \(hours) h" }
        if hours > 0 { return "\(hours) h \(minutes) min" }
        if minutes > 0 { return "\(minutes) min \(seconds % 60) s" }
        return "\(seconds) s"
    }

    func renderKeys(
        context: SignedInRequestContext,
        confirming: Environment? = nil,
        rolling: Environment? = nil,
        revealed: GeneratedSecretKey? = nil,
        passwordError: String? = nil,
        rollError: String? = nil,
        notice: String? = nil,
        status: HTTPResponse.Status = .ok
    ) async throws -> Response {
        let now = Date()
        let records = try await store.secretKeys(for: context.account.id)
        var active: [Environment: SecretKeyRecord] = [:]
        var inGrace: [Environment: SecretKeyRecord] = [:]
        var leaked: [Environment: [SecretKeyRecord]] = [:]
        for record in records {
            if record.isActive {
                active[record.environmentID.environment] = record
            } else if record.graceEnd(at: now) != nil, inGrace[record.environmentID.environment] == nil {
                inGrace[record.environmentID.environment] = record
            } else if record.revocationReason == .leaked, let revokedAt = record.revokedAt,
                now.timeIntervalSince(revokedAt) < Self.leakShownFor
            {
                leaked[record.environmentID.environment, default: []].append(record)
            }
        }
        // Where each leak was found, from its audit entry.
        var reports: [String: AuditEntry] = [:]
        if !leaked.isEmpty {
            for entry in try await store.auditEntries(for: context.account.id, matching: AuditQuery(event: .keyReportedLeaked, limit: 50)) {
                if let id = entry.resourceID, reports[id] == nil { reports[id] = entry }
            }
        }
        let environments: [[String: Any]] = Environment.allCases.map { environment in
            var card: [String: Any] = [
                "environment": environment.rawValue,
                "label": environment.label,
                "lowercaseLabel": environment.rawValue,
                "isProduction": environment == .production,
                "current": active[environment]?.id.rawValue ?? "none",
                "csrf": context.csrfToken,
                "mayManage": context.may(.manageKey(environment)),
                "usesCode": context.member.hasTwoFactor,
                "role": context.member.role.rawValue,
            ]
            if let record = active[environment] {
                card["exists"] = true
                card["hint"] = record.hint
                card["createdAt"] = DashboardPages.display(record.createdAt)
                card["createdBy"] = record.createdBy
                card["lastUsed"] = record.lastUsedAt.map { DashboardPages.display($0) } ?? "never"
            }
            let limit = Self.describe(
                rateLimits.setting(for: EnvironmentID(accountID: context.account.id, environment: environment)),
                for: environment
            )
            card["limit"] = limit.text
            if let rolled = inGrace[environment], let end = rolled.graceEnd(at: now) {
                card["grace"] = [
                    "hint": rolled.hint,
                    "endsAt": DashboardPages.display(end),
                    "endsAtISO": KeywayJSON.timestamp(end),
                    "remaining": Self.remaining(until: end, from: now),
                    "lastUsed": rolled.lastUsedAt.map { DashboardPages.display($0) } ?? "never",
                ]
            }
            card["leaks"] = (leaked[environment] ?? []).map { record -> [String: Any] in
                let report = reports[record.id.rawValue]
                var leak: [String: Any] = ["hint": record.hint, "at": record.revokedAt.map { DashboardPages.display($0) } ?? ""]
                if let source = report?.details["source"] { leak["source"] = source }
                if let url = report?.details["url"] {
                    // Linked only when it is a web address: a report can say anything.
                    if url.lowercased().hasPrefix("https://") || url.lowercased().hasPrefix("http://") {
                        leak["link"] = url
                    } else {
                        leak["url"] = url
                    }
                }
                return leak
            }
            if confirming == environment { card["confirming"] = true }
            if rolling == environment, active[environment] != nil {
                card["rolling"] = true
                card["graceChoices"] = KeyGrace.choices.map { choice in
                    ["value": choice.grace.description, "label": choice.label, "checked": choice.grace.seconds == 86_400]
                }
                if let rollError { card["rollError"] = rollError }
            }
            if let passwordError, confirming == environment || rolling == environment { card["passwordError"] = passwordError }
            // The only place a key's plaintext is ever rendered: this one response.
            if let revealed, revealed.environment == environment { card["revealed"] = revealed.revealPlaintext() }
            return card
        }
        return pages.render(
            "api-keys",
            title: "API Keys",
            section: .keys,
            csrf: context.csrfToken,
            signedIn: context.signedIn,
            notice: notice,
            data: ["environments": environments],
            status: status
        )
    }
}
