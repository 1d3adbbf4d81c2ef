import Foundation

/// A failure the caller can act on. Carries no HTTP: the HTTP layer maps
/// ``code`` to a status in one place.
///
/// Messages are written for the caller and never contain a secret or
/// anything about another account.
public struct KeywayError: Error, Sendable, Hashable, CustomStringConvertible {
    /// A stable, machine-readable reason. Extensible without breaking callers.
    public struct Code: RawRepresentable, Sendable, Hashable, CustomStringConvertible {
        public let rawValue: String
        public init(rawValue: String) { self.rawValue = rawValue }
        public var description: String { rawValue }

        // Every code any surface returns is declared here, and listed in ``all``: a test checks
        // that each has a status other than 500 (but `internal_error`), a row in the README's
        // error table and, unless it is the dashboard's or the CLI's, a place in the OpenAPI document.

        // Secret keys.
        public static let missingAPIKey = Code(rawValue: "missing_api_key")
        public static let malformedAPIKey = Code(rawValue: "malformed_api_key")
        public static let invalidAPIKey = Code(rawValue: "invalid_api_key")
        public static let revokedAPIKey = Code(rawValue: "revoked_api_key")
        public static let userTokenNotAccepted = Code(rawValue: "user_token_not_accepted")
        public static let apiKeyInQuery = Code(rawValue: "api_key_in_query")
        // Service tokens (`/keys/verify`).
        public static let missingServiceToken = Code(rawValue: "missing_service_token")
        public static let invalidServiceToken = Code(rawValue: "invalid_service_token")
        public static let revokedServiceToken = Code(rawValue: "revoked_service_token")
        public static let apiKeyNotAccepted = Code(rawValue: "api_key_not_accepted")
        // Leak reports (`/leaked-keys`).
        public static let invalidReportSignature = Code(rawValue: "invalid_report_signature")
        // User tokens.
        public static let missingUserToken = Code(rawValue: "missing_user_token")
        public static let malformedUserToken = Code(rawValue: "malformed_user_token")
        public static let secretKeyNotAccepted = Code(rawValue: "secret_key_not_accepted")
        public static let unsupportedTokenAlgorithm = Code(rawValue: "unsupported_token_algorithm")
        public static let invalidTokenSignature = Code(rawValue: "invalid_token_signature")
        public static let invalidTokenAudience = Code(rawValue: "invalid_token_audience")
        public static let invalidTokenIssuer = Code(rawValue: "invalid_token_issuer")
        public static let tokenExpired = Code(rawValue: "token_expired")
        public static let tokenNotYetValid = Code(rawValue: "token_not_yet_valid")
        public static let tokenUserDeleted = Code(rawValue: "token_user_deleted")
        // Users.
        public static let userNotFound = Code(rawValue: "user_not_found")
        public static let usernameTaken = Code(rawValue: "username_taken")
        public static let invalidInput = Code(rawValue: "invalid_input")
        public static let invalidUsers = Code(rawValue: "invalid_users")
        public static let noValidUsers = Code(rawValue: "no_valid_users")
        public static let batchTooLarge = Code(rawValue: "batch_too_large")
        public static let invalidCursor = Code(rawValue: "invalid_cursor")
        // Requests.
        public static let invalidJSON = Code(rawValue: "invalid_json")
        public static let bodyTooLarge = Code(rawValue: "body_too_large")
        public static let unsupportedAPIVersion = Code(rawValue: "unsupported_api_version")
        public static let routeNotFound = Code(rawValue: "route_not_found")
        public static let methodNotAllowed = Code(rawValue: "method_not_allowed")
        public static let badRequest = Code(rawValue: "bad_request")
        public static let requestTimeout = Code(rawValue: "request_timeout")
        public static let metricsTokenRequired = Code(rawValue: "metrics_token_required")
        public static let rateLimited = Code(rawValue: "rate_limited")
        // Dashboard and CLI.
        public static let accountNotFound = Code(rawValue: "account_not_found")
        public static let emailTaken = Code(rawValue: "email_taken")
        public static let activeKeyChanged = Code(rawValue: "active_key_changed")
        public static let tooManyKeyGenerations = Code(rawValue: "too_many_key_generations")
        public static let serviceTokenNameTaken = Code(rawValue: "service_token_name_taken")
        public static let tooManyWebhookEndpoints = Code(rawValue: "too_many_webhook_endpoints")
        public static let webhookEndpointNotFound = Code(rawValue: "webhook_endpoint_not_found")
        public static let webhookDeliveryNotFound = Code(rawValue: "webhook_delivery_not_found")
        public static let forbiddenByRole = Code(rawValue: "forbidden_by_role")
        public static let lastOwner = Code(rawValue: "last_owner")
        public static let memberNotFound = Code(rawValue: "member_not_found")
        public static let invitationNotValid = Code(rawValue: "invitation_not_valid")
        public static let alreadyAMember = Code(rawValue: "already_a_member")
        // Operations.
        public static let serviceUnavailable = Code(rawValue: "service_unavailable")
        public static let internalError = Code(rawValue: "internal_error")

        /// Every code above.
        public static let all: [Code] = [
            .missingAPIKey, .malformedAPIKey, .invalidAPIKey, .revokedAPIKey, .userTokenNotAccepted, .apiKeyInQuery,
            .missingServiceToken, .invalidServiceToken, .revokedServiceToken, .apiKeyNotAccepted, .invalidReportSignature,
            .missingUserToken, .malformedUserToken, .secretKeyNotAccepted, .unsupportedTokenAlgorithm, .invalidTokenSignature,
            .invalidTokenAudience, .invalidTokenIssuer, .tokenExpired, .tokenNotYetValid, .tokenUserDeleted,
            .userNotFound, .usernameTaken, .invalidInput, .invalidUsers, .noValidUsers, .batchTooLarge, .invalidCursor,
            .invalidJSON, .bodyTooLarge, .unsupportedAPIVersion, .routeNotFound, .methodNotAllowed, .badRequest,
            .requestTimeout, .metricsTokenRequired, .rateLimited,
            .accountNotFound, .emailTaken, .activeKeyChanged, .tooManyKeyGenerations, .serviceTokenNameTaken,
            .tooManyWebhookEndpoints, .webhookEndpointNotFound, .webhookDeliveryNotFound,
            .forbiddenByRole, .lastOwner, .memberNotFound, .invitationNotValid, .alreadyAMember,
            .serviceUnavailable, .internalError,
        ]

        /// The codes only the dashboard or the CLI shows, which the API's document does not list.
        public static let outsideTheAPI: Set<Code> = [
            .accountNotFound, .emailTaken, .activeKeyChanged, .tooManyKeyGenerations, .serviceTokenNameTaken,
            .tooManyWebhookEndpoints, .webhookEndpointNotFound, .webhookDeliveryNotFound,
            .forbiddenByRole, .lastOwner, .memberNotFound, .invitationNotValid, .alreadyAMember,
        ]
    }

    /// What went wrong, for programs.
    public let code: Code
    /// What went wrong, for people.
    public let message: String
    /// Extra fields for the caller (e.g. `revokedAt`), safe to show.
    public let details: [String: String]

    /// - Parameters:
    ///   - code: The stable reason.
    ///   - message: A sentence for the caller; never a secret, never another account's data.
    ///   - details: Extra fields for the caller.
    public init(_ code: Code, _ message: String, details: [String: String] = [:]) {
        self.code = code
        self.message = message
        self.details = details
    }

    public var description: String { "\(code): \(message)" }

    /// A field of the caller's input breaks a rule; `details["field"]` names it.
    public static func invalidInput(field: String, _ message: String) -> KeywayError {
        KeywayError(.invalidInput, message, details: ["field": field])
    }

    /// No such user in `environment`. When the same account's `other` environment
    /// has it, says so (as Stripe does); callers must never pass another account's environment.
    public static func userNotFound(_ reference: String, in environment: Environment, existsIn other: Environment?) -> KeywayError {
        var message = "No user '\(reference)' exists in the \(environment.rawValue) environment."
        var details = ["environment": environment.rawValue]
        if let other {
            message += " It exists in your \(other.rawValue) environment: use your \(other.rawValue) key to reach it."
            details["otherEnvironment"] = other.rawValue
        }
        return KeywayError(.userNotFound, message, details: details)
    }

    /// The username exists in the environment already.
    public static func usernameTaken(_ username: String) -> KeywayError {
        KeywayError(.usernameTaken, "A user with username '\(username)' already exists in this environment.", details: ["field": "username"])
    }

    /// A username may not be the identifier of another user of its environment:
    /// every reference in a path must name one user. Like a taken username, it
    /// conflicts with what the environment holds, so it shares that code.
    public static func usernameIsAUserID(_ username: String) -> KeywayError {
        KeywayError(
            .usernameTaken,
            "username '\(username)' is the id of another user in this environment; a username may not equal a user id, so that every id or username names one user.",
            details: ["field": "username"]
        )
    }

    /// The environment's active key is not the one the caller expected to replace.
    public static let activeKeyChanged = KeywayError(
        .activeKeyChanged,
        "The environment's key changed since it was shown, so nothing was generated."
    )

    /// The environment generated as many keys as its limit allows in the window.
    /// - Parameter retryAfter: Whole seconds until the oldest generation in the window leaves it.
    public static func tooManyKeyGenerations(limit: KeyGenerationLimit, retryAfter: Int) -> KeywayError {
        KeywayError(
            .tooManyKeyGenerations,
            "This environment generated \(limit.count) keys in the last \(limit.windowSeconds) seconds, its limit. Try again in \(retryAfter) seconds.",
            details: ["retryAfter": String(retryAfter)]
        )
    }

    /// The key made more requests than its environment's limit allows.
    /// - Parameter retryAfter: Whole seconds until one more request would be allowed.
    public static func rateLimited(limit: Int, retryAfter: Int) -> KeywayError {
        KeywayError(
            .rateLimited,
            "This key made more than \(limit) requests in a second, its environment's limit. Try again in \(retryAfter) second\(retryAfter == 1 ? "" : "s").",
            details: ["retryAfter": String(retryAfter)]
        )
    }

    /// One client (an IPv4 address, an IPv6 /64) sent more unsigned leak reports than
    /// `POST /leaked-keys` takes in a second.
    /// - Parameter retryAfter: Whole seconds until one more report would be taken.
    public static func tooManyLeakReports(limit: Int, retryAfter: Int) -> KeywayError {
        KeywayError(
            .rateLimited,
            "This address (or its IPv6 /64) sent more than \(limit) unsigned leak reports in a second. Try again in \(retryAfter) second\(retryAfter == 1 ? "" : "s"), or sign reports as GitHub's secret scanning does.",
            details: ["retryAfter": String(retryAfter)]
        )
    }

    /// An active service token has this name already.
    public static func serviceTokenNameTaken(_ name: String) -> KeywayError {
        KeywayError(.serviceTokenNameTaken, "An active service token is named '\(name)'; revoke it first or choose another name.")
    }

    /// No account has this identifier.
    public static func accountNotFound(_ id: AccountID) -> KeywayError {
        KeywayError(.accountNotFound, "No account '\(id)' exists.")
    }

    /// The environment has as many webhook endpoints as it may.
    public static func tooManyWebhookEndpoints(limit: Int) -> KeywayError {
        KeywayError(.tooManyWebhookEndpoints, "An environment may have at most \(limit) webhook endpoints; delete one first.")
    }

    /// The account has no webhook endpoint with this id.
    public static func webhookEndpointNotFound(_ id: String) -> KeywayError {
        KeywayError(.webhookEndpointNotFound, "No webhook endpoint '\(id)' exists in this account.")
    }

    /// The account has no delivery with this id, its endpoint is disabled, or it is being delivered now.
    public static func webhookDeliveryNotFound(_ id: String) -> KeywayError {
        KeywayError(
            .webhookDeliveryNotFound,
            "No delivery '\(id)' of an enabled endpoint exists in this account, or it is being delivered now."
        )
    }

    /// The environment has an endpoint with this URL already.
    public static let duplicateWebhookURL = KeywayError.invalidInput(field: "url", "This environment already has an endpoint with this URL.")
}
