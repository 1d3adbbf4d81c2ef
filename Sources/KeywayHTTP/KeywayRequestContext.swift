public import Foundation
public import Hummingbird
public import KeywayCore
import Logging
import NIOCore

/// Hummingbird has an `Environment` too; in this module the word means Keyway's.
typealias Environment = KeywayCore.Environment

/// The context of every request: its id, API version and, once the
/// authenticator has run, the key that authenticated it.
public struct KeywayRequestContext: RequestContext {
    public var coreContext: CoreRequestContextStorage
    /// Echoed from a sane incoming `x-request-id`, otherwise generated.
    public var requestID: String
    /// The API version the caller asked for (path segment or `x-api-version`).
    public var apiVersion: APIVersion = .current
    /// Set by ``SecretKeyAuthenticator``; read it through ``AuthenticatedRequestContext``.
    public var authenticatedKey: AuthenticatedKey?

    /// The peer's address; formatted only when asked (the dashboard's throttling),
    /// not on every API request.
    private let remoteSocketAddress: SocketAddress?

    /// The client's IP address, for throttling; "unknown" when the transport has none.
    public var remoteAddress: String {
        remoteSocketAddress?.ipAddress ?? "unknown"
    }

    public init(source: ApplicationRequestContextSource) {
        self.coreContext = .init(source: source)
        self.requestID = ""
        self.remoteSocketAddress = source.channel.remoteAddress
    }

    public var responseEncoder: JSONEncoder { KeywayJSON.encoder }
}

/// The context of handlers behind the authenticator, where the key is not optional,
/// so a handler cannot forget to check it.
public struct AuthenticatedRequestContext: ChildRequestContext {
    public var coreContext: CoreRequestContextStorage
    public let requestID: String
    public let apiVersion: APIVersion
    /// The key that authenticated the request, and so its account and environment.
    public let key: AuthenticatedKey

    public init(context: KeywayRequestContext) throws {
        guard let key = context.authenticatedKey else {
            // Only reachable if a route is registered without the authenticator.
            throw KeywayError(.missingAPIKey, "This endpoint needs 'Authorization: Bearer <API key>'.")
        }
        self.coreContext = context.coreContext
        self.requestID = context.requestID
        self.apiVersion = context.apiVersion
        self.key = key
    }

    public var responseEncoder: JSONEncoder { KeywayJSON.encoder }

    /// The environment every user operation of this request is confined to.
    public var environmentID: EnvironmentID { key.environmentID }
}
