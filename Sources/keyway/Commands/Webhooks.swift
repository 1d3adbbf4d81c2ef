import ArgumentParser
import Foundation
import KeywayCore
import Logging

struct WebhooksCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "webhooks",
        abstract: "Manage an account's webhook endpoints and see their deliveries.",
        discussion: """
            Each environment may have up to \(Webhooks.endpointLimit) endpoints, one per URL. URLs must be https to public \
            addresses; KEYWAY_WEBHOOK_ALLOW_INSECURE=1 allows any address, and http to loopback, for development. A running \
            server delivers what these commands change; secrets are printed once.
            """,
        subcommands: [List.self, Add.self, RotateSecret.self, Enable.self, Disable.self, Remove.self, Deliveries.self, Resend.self]
    )

    struct EndpointOptions: ParsableArguments {
        @OptionGroup var target: AccountOptions

        @Option(help: ArgumentHelp("The endpoint's id (we_…).", valueName: "id"))
        var endpoint: String

        var endpointID: WebhookEndpointID { WebhookEndpointID(rawValue: endpoint) }
    }

    struct List: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "List an account's endpoints.")

        @OptionGroup var target: AccountOptions
        @OptionGroup var database: DatabaseOptions

        func run() async throws {
            try await database.withStore { (store: any KeywayStore) async throws -> Void in
                try await store.requireAccount(target.accountID)
                let endpoints = try await store.webhookEndpoints(for: target.accountID)
                guard !endpoints.isEmpty else {
                    print("No webhook endpoints.")
                    return
                }
                print(
                    table(
                        ["ID", "ENVIRONMENT", "URL", "STATE", "EVENTS"],
                        endpoints.map { endpoint in
                            [
                                endpoint.id.rawValue, endpoint.environmentID.environment.rawValue, endpoint.url,
                                endpoint.disabledAt == nil ? "enabled" : "disabled: \(endpoint.disabledReason ?? "")",
                                endpoint.events.sorted().map(\.rawValue).joined(separator: ","),
                            ]
                        }
                    )
                )
            }
        }
    }

    struct Add: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Add an endpoint; prints its id, then its signing secret (shown once).",
            discussion: "Events: \(WebhookEventType.allCases.map(\.rawValue).joined(separator: ", "))."
        )

        @OptionGroup var target: EnvironmentOptions

        @Option(help: ArgumentHelp("Where to post events (https).", valueName: "url"))
        var url: String

        @Option(help: ArgumentHelp("Comma-separated event types; every event when left out.", valueName: "types"))
        var events: String?

        @OptionGroup var database: DatabaseOptions

        func parsedEvents() throws -> Set<WebhookEventType> {
            guard let events else { return Set(WebhookEventType.allCases) }
            var parsed: Set<WebhookEventType> = []
            for name in events.split(separator: ",").map({ $0.trimmingCharacters(in: .whitespaces) }) where !name.isEmpty {
                guard let type = WebhookEventType(rawValue: name) else {
                    throw ValidationError(
                        "Unknown event '\(name)'; choose from \(WebhookEventType.allCases.map(\.rawValue).joined(separator: ", "))."
                    )
                }
                parsed.insert(type)
            }
            guard !parsed.isEmpty else { throw ValidationError("--events names no event.") }
            return parsed
        }

        func validate() throws { _ = try parsedEvents() }

        func run() async throws {
            let settings = try database.settings()
            let events = try parsedEvents()
            try await database.withStore(settings) { (store: any KeywayStore) async throws -> Void in
                try await store.requireAccount(target.accountID)
                let webhooks = try await database.webhooks(settings, store: store)
                let (endpoint, secret) = try await webhooks.createEndpoint(in: target.environmentID, url: url, events: events, audit: .cli)
                print(endpoint.id.rawValue)
                print(secret.serialized)
                FileHandle.standardError.write(Data("The signing secret is shown once: keep it where the receiver can read it.\n".utf8))
            }
        }
    }

    struct RotateSecret: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Give an endpoint a new signing secret (printed once); the old one also signs for 24 hours."
        )

        @OptionGroup var target: EndpointOptions
        @OptionGroup var database: DatabaseOptions

        func run() async throws {
            let settings = try database.settings()
            try await database.withStore(settings) { (store: any KeywayStore) async throws -> Void in
                try await store.requireAccount(target.target.accountID)
                let webhooks = try await database.webhooks(settings, store: store)
                let secret = try await webhooks.rotateSecret(target.endpointID, in: target.target.accountID, audit: .cli)
                print(secret.serialized)
            }
        }
    }

    struct Enable: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Deliver to an endpoint again (after a 410 or five days of failures).")

        @OptionGroup var target: EndpointOptions
        @OptionGroup var database: DatabaseOptions

        func run() async throws { try await setEnabled(true, target: target, database: database) }
    }

    struct Disable: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Stop delivering to an endpoint; its waiting deliveries fail.")

        @OptionGroup var target: EndpointOptions
        @OptionGroup var database: DatabaseOptions

        func run() async throws { try await setEnabled(false, target: target, database: database) }
    }

    static func setEnabled(_ enabled: Bool, target: EndpointOptions, database: DatabaseOptions) async throws {
        try await database.withStore { (store: any KeywayStore) async throws -> Void in
            try await store.requireAccount(target.target.accountID)
            guard
                try await store.updateWebhookEndpoint(
                    target.endpointID,
                    in: target.target.accountID,
                    events: nil,
                    enabled: enabled,
                    audit: .cli,
                    at: Date()
                ) != nil
            else { throw KeywayError.webhookEndpointNotFound(target.endpoint) }
            print("\(target.endpoint) \(enabled ? "enabled" : "disabled")")
        }
    }

    struct Remove: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Delete an endpoint and its deliveries.")

        @OptionGroup var target: EndpointOptions
        @OptionGroup var database: DatabaseOptions

        func run() async throws {
            try await database.withStore { (store: any KeywayStore) async throws -> Void in
                try await store.requireAccount(target.target.accountID)
                guard try await store.deleteWebhookEndpoint(target.endpointID, in: target.target.accountID, audit: .cli, at: Date()) else {
                    throw KeywayError.webhookEndpointNotFound(target.endpoint)
                }
                print("\(target.endpoint) removed")
            }
        }
    }

    struct Deliveries: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "List an account's recent deliveries, newest first.")

        @OptionGroup var target: AccountOptions

        @Option(help: ArgumentHelp("Only this endpoint's deliveries.", valueName: "id"))
        var endpoint: String?

        @Option(help: ArgumentHelp("How many to list (1–1000).", valueName: "n"))
        var limit = 50

        @OptionGroup var database: DatabaseOptions

        func validate() throws {
            guard (1...1000).contains(limit) else { throw ValidationError("--limit must be from 1 to 1000.") }
        }

        func run() async throws {
            try await database.withStore { (store: any KeywayStore) async throws -> Void in
                try await store.requireAccount(target.accountID)
                let deliveries = try await store.webhookDeliveries(
                    for: target.accountID,
                    endpoint: endpoint.map(WebhookEndpointID.init(rawValue:)),
                    limit: limit
                )
                guard !deliveries.isEmpty else {
                    print("No deliveries.")
                    return
                }
                print(
                    table(
                        ["ID", "CREATED", "EVENT", "ENDPOINT", "STATUS", "ATTEMPTS", "LAST ANSWER", "NEXT ATTEMPT"],
                        deliveries.map { delivery in
                            [
                                delivery.id, delivery.createdAt.auditTimestamp, delivery.eventType.rawValue, delivery.endpointID.rawValue,
                                delivery.status.rawValue, String(delivery.attempts),
                                delivery.lastStatusCode.map { "HTTP \($0)" } ?? delivery.lastError ?? "-",
                                delivery.nextAttemptAt?.auditTimestamp ?? "-",
                            ]
                        }
                    )
                )
            }
        }
    }

    struct Resend: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Deliver one delivery again, now, with a new schedule of ten attempts (not while it is being attempted)."
        )

        @OptionGroup var target: AccountOptions

        @Option(help: ArgumentHelp("The delivery's id (msg_…).", valueName: "id"))
        var delivery: String

        @OptionGroup var database: DatabaseOptions

        func run() async throws {
            try await database.withStore { (store: any KeywayStore) async throws -> Void in
                try await store.requireAccount(target.accountID)
                guard try await store.resendWebhookDelivery(delivery, in: target.accountID, at: Date()) else {
                    throw KeywayError.webhookDeliveryNotFound(delivery)
                }
                print("\(delivery) queued")
            }
        }
    }
}

extension DatabaseOptions {
    /// Webhooks with the deployment's master key, for commands that seal or open secrets.
    func webhooks(_ settings: Settings, store: any KeywayStore) async throws -> Webhooks {
        webhooks(settings, store: store, masterKey: try await masterKey(settings, store: store, logger: Logger(label: "keyway.cli")))
    }
}
