import Foundation
import HTTPTypes
import Hummingbird
import KeywayCore
import Logging

// Settings → Webhooks: endpoints per environment, their secrets (shown once), recent deliveries.
extension DashboardController {
    /// How many recent deliveries the page lists.
    static let deliveriesShown = 50

    @Sendable func webhooksPage(_ request: Request, context: SignedInRequestContext) async throws -> Response {
        let notice: String? =
            request.uri.queryParameters["notice"] == "stale" ? "The secret changed since that page was loaded, so nothing was rotated." : nil
        return try await renderWebhooks(context: context, notice: notice)
    }

    /// Which rotation a page showed: a resubmitted form (a reload) must not rotate again and throw
    /// away the secret receivers still verify with.
    static func rotation(of endpoint: WebhookEndpoint) -> String {
        endpoint.previousSecretExpiresAt.map { String($0.keywayMilliseconds) } ?? "none"
    }

    @Sendable func addWebhookEndpoint(_ request: Request, context: SignedInRequestContext) async throws -> Response {
        let webhooks = try requireWebhooks()
        guard let environment = context.parameters.get("environment").flatMap(Environment.init(rawValue:)) else {
            throw DashboardErrorPage.notFound
        }
        try context.require(.manageWebhooks(environment))
        let url = context.form["url"] ?? ""
        var events: Set<WebhookEventType> = []
        for name in context.form.all("events") {
            guard let type = WebhookEventType(rawValue: name) else {
                return try await renderWebhooks(context: context, urlError: (environment, url, "Unknown event '\(name)'."), status: .badRequest)
            }
            events.insert(type)
        }
        guard !events.isEmpty else {
            return try await renderWebhooks(context: context, urlError: (environment, url, "Choose at least one event."), status: .badRequest)
        }
        let endpoint: WebhookEndpoint
        let secret: WebhookSecret
        do {
            (endpoint, secret) = try await webhooks.createEndpoint(
                in: EnvironmentID(accountID: context.account.id, environment: environment),
                url: url,
                events: events,
                audit: audit(request, context)
            )
        } catch let error as KeywayError where [.invalidInput, .tooManyWebhookEndpoints].contains(error.code) {
            return try await renderWebhooks(context: context, urlError: (environment, url, error.message), status: .badRequest)
        }
        context.logger.info("webhook endpoint added", metadata: ["environment": "\(environment.rawValue)", "webhook.endpoint": "\(endpoint.id)"])
        return try await renderWebhooks(context: context, revealed: (endpoint.url, secret, nil))
    }

    @Sendable func rotateWebhookSecret(_ request: Request, context: SignedInRequestContext) async throws -> Response {
        let webhooks = try requireWebhooks()
        let endpoint = try await manageableEndpoint(context)
        let id = endpoint.id
        guard context.form["current"] == Self.rotation(of: endpoint) else {
            throw DashboardRedirect(location: "/dashboard/settings/webhooks?notice=stale")
        }
        let now = Date()
        let secret = try await webhooks.rotateSecret(id, in: context.account.id, audit: audit(request, context), at: now)
        context.logger.info("webhook secret rotated", metadata: ["webhook.endpoint": "\(id)"])
        return try await renderWebhooks(context: context, revealed: (endpoint.url, secret, now.addingTimeInterval(Webhooks.secretOverlap)))
    }

    @Sendable func setWebhookEndpointState(_ request: Request, context: SignedInRequestContext) async throws -> Response {
        _ = try requireWebhooks()
        let id = try await manageableEndpoint(context).id
        guard let enabled = context.form["enabled"].flatMap(Bool.init) else { throw DashboardErrorPage.notFound }
        guard
            try await store.updateWebhookEndpoint(
                id,
                in: context.account.id,
                events: nil,
                enabled: enabled,
                audit: audit(request, context),
                at: Date()
            )
                != nil
        else { throw DashboardErrorPage.notFound }
        throw DashboardRedirect(location: "/dashboard/settings/webhooks#\(id.rawValue)")
    }

    @Sendable func deleteWebhookEndpoint(_ request: Request, context: SignedInRequestContext) async throws -> Response {
        _ = try requireWebhooks()
        let id = try await manageableEndpoint(context).id
        guard try await store.deleteWebhookEndpoint(id, in: context.account.id, audit: audit(request, context), at: Date()) else {
            throw DashboardErrorPage.notFound
        }
        throw DashboardRedirect(location: "/dashboard/settings/webhooks")
    }

    @Sendable func resendWebhookDelivery(_ request: Request, context: SignedInRequestContext) async throws -> Response {
        _ = try requireWebhooks()
        // A member who may manage one environment's webhooks only resends that environment's
        // deliveries: another's is not found, as if it did not exist.
        let environment: Environment?
        if context.may(.manageWebhooks(.production)) && context.may(.manageWebhooks(.development)) {
            environment = nil
        } else if let allowed = Environment.allCases.first(where: { context.may(.manageWebhooks($0)) }) {
            environment = allowed
        } else {
            throw KeywayError.roleForbids(context.member.role)
        }
        guard let id = context.parameters.get("id"),
            try await store.resendWebhookDelivery(id, in: context.account.id, environment: environment, at: Date())
        else {
            throw DashboardErrorPage.notFound
        }
        throw DashboardRedirect(location: "/dashboard/settings/webhooks#\(id)")
    }

    private func requireWebhooks() throws -> Webhooks {
        guard let webhooks else { throw DashboardErrorPage.notFound }
        return webhooks
    }

    /// The endpoint the path names, in the member's account, when their role may manage its environment's webhooks.
    private func manageableEndpoint(_ context: SignedInRequestContext) async throws -> WebhookEndpoint {
        guard let id = context.parameters.get("id"),
            let endpoint = try await store.webhookEndpoint(WebhookEndpointID(rawValue: id), in: context.account.id)
        else { throw DashboardErrorPage.notFound }
        try context.require(.manageWebhooks(endpoint.environmentID.environment))
        return endpoint
    }

    func renderWebhooks(
        context: SignedInRequestContext,
        revealed: (url: String, secret: WebhookSecret, previousUntil: Date?)? = nil,
        urlError: (environment: Environment, url: String, message: String)? = nil,
        notice: String? = nil,
        status: HTTPResponse.Status = .ok
    ) async throws -> Response {
        let account = context.account.id
        let endpoints = try await store.webhookEndpoints(for: account)
        let urls = Dictionary(uniqueKeysWithValues: endpoints.map { ($0.id, $0.url) })
        let environmentOf = Dictionary(uniqueKeysWithValues: endpoints.map { ($0.id, $0.environmentID.environment) })
        let environments: [[String: Any]] = Environment.allCases.map { environment in
            var card: [String: Any] = [
                "environment": environment.rawValue,
                "label": environment.label,
                "csrf": context.csrfToken,
                "mayManage": context.may(.manageWebhooks(environment)),
                "role": context.member.role.rawValue,
                "eventChoices": WebhookEventType.allCases.map { ["value": $0.rawValue] },
                "endpoints": endpoints.filter { $0.environmentID.environment == environment }.map { endpoint -> [String: Any] in
                    var row: [String: Any] = [
                        "id": endpoint.id.rawValue,
                        "mayManage": context.may(.manageWebhooks(environment)),
                        "url": endpoint.url,
                        "csrf": context.csrfToken,
                        "events": endpoint.events.sorted().map(\.rawValue).joined(separator: ", "),
                        "disabled": endpoint.disabledAt != nil,
                        "rotation": Self.rotation(of: endpoint),
                    ]
                    if let reason = endpoint.disabledReason { row["disabledReason"] = reason }
                    if let since = endpoint.failingSince, endpoint.disabledAt == nil {
                        row["failingSince"] = DashboardPages.display(since)
                        row["failingSinceISO"] = since.auditTimestamp
                    }
                    return row
                },
            ]
            if let urlError, urlError.environment == environment {
                card["urlError"] = urlError.message
                card["urlField"] = urlError.url
            }
            return card
        }
        let deliveries = try await store.webhookDeliveries(for: account, endpoint: nil, limit: Self.deliveriesShown)
        let rows: [[String: Any]] = deliveries.map { delivery in
            var answer = "—"
            if let code = delivery.lastStatusCode {
                answer = "HTTP \(code)"
            } else if let error = delivery.lastError {
                answer = error
            }
            return [
                "id": delivery.id,
                "created": DashboardPages.display(delivery.createdAt, seconds: true),
                "createdISO": delivery.createdAt.auditTimestamp,
                "event": delivery.eventType.rawValue,
                "url": urls[delivery.endpointID] ?? "",
                "status": delivery.status.rawValue,
                "attempts": delivery.attempts,
                "answer": answer,
                "next": delivery.nextAttemptAt.map { DashboardPages.display($0, seconds: true) } ?? "—",
                "resendable": delivery.status != .pending
                    && environmentOf[delivery.endpointID].map { context.may(.manageWebhooks($0)) } == true,
                "csrf": context.csrfToken,
            ]
        }
        var data: [String: Any] = [
            "environments": environments,
            "limit": Webhooks.endpointLimit,
            "deliveries": rows,
            "hasDeliveries": !rows.isEmpty,
        ]
        if !egressIPs.isEmpty { data["egress"] = egressIPs.joined(separator: ", ") }
        if let revealed {
            var reveal: [String: Any] = ["url": revealed.url, "secret": revealed.secret.serialized]
            if let until = revealed.previousUntil {
                reveal["rotated"] = true
                reveal["previousUntil"] = DashboardPages.display(until)
            }
            data["revealed"] = reveal
        }
        return pages.render(
            "webhooks",
            title: "Webhooks",
            section: .webhooks,
            csrf: context.csrfToken,
            signedIn: context.signedIn,
            notice: notice,
            data: data,
            status: status
        )
    }
}
