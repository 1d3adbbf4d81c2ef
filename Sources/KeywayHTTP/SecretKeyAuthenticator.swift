import Hummingbird
import HummingbirdCore
import KeywayCore
import Metrics
import Synchronization

/// Authenticates `Authorization: Bearer <secret key>` and puts the key in the context.
///
/// Strict but kind: the scheme is matched case-insensitively and surrounding
/// whitespace is ignored, but a key in the query string is refused outright.
struct SecretKeyAuthenticator: RouterMiddleware {
    typealias Context = KeywayRequestContext

    let keys: SecretKeys

    /// Query parameters through which clients commonly try to pass credentials.
    private static let credentialParameters: Set<String> = ["access_token", "api_key", "apikey", "key", "token", "authorization"]

    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        var context = context
        let key: AuthenticatedKey
        do {
            try Self.refuseKeyInQuery(request.uri)
            let token = try Self.bearerToken(request.headers[values: .authorization])
            key = try await keys.authenticate(token)
        } catch let error as KeywayError {
            Self.failureCounter(for: error.code).increment()
            throw error
        }
        context.authenticatedKey = key
        guard key.expiresAt != nil else { return try await next(request, context) }
        // A rolled key in its grace says when it stops on every response, errors included,
        // so its owner's logs show the deadline wherever the key is still used.
        var response = await ErrorMappingMiddleware.responding(to: request, context: context, next: next)
        key.applyExpiry(to: &response.headers)
        return response
    }

    /// Counters by error code, made once: creating one per failure costs a registry lookup under a lock.
    private static let failureCounters = Mutex<[KeywayError.Code: Counter]>([:])

    static func failureCounter(for code: KeywayError.Code) -> Counter {
        failureCounters.withLock { counters in
            if let counter = counters[code] { return counter }
            let counter = Counter(label: "keyway_auth_failures_total", dimensions: [("code", code.rawValue)])
            counters[code] = counter
            return counter
        }
    }

    static func refuseKeyInQuery(_ uri: URI) throws {
        guard let query = uri.query, !query.isEmpty else { return }
        let exposed =
            query.contains("kw_dev_") || query.contains("kw_prod_")
            || uri.queryParameters.contains { credentialParameters.contains($0.key.lowercased()) }
        if exposed {
            throw KeywayError(
                .apiKeyInQuery,
                "API keys are not accepted in the URL, where logs and browser history keep them. "
                    + "Send 'Authorization: Bearer <API key>' instead, and regenerate any key that was sent in a URL."
            )
        }
    }

    /// The credential of a single `Authorization: Bearer …` header.
    static func bearerToken(_ values: [String]) throws -> Substring {
        switch BearerCredential.parse(values) {
        case .success(let credential): return credential
        case .failure(.several): throw KeywayError(.malformedAPIKey, "Send exactly one Authorization header.")
        case .failure(.absent):
            throw KeywayError(.missingAPIKey, "This endpoint needs your API key: send 'Authorization: Bearer <API key>'.")
        case .failure(.notBearer):
            throw KeywayError(.missingAPIKey, "The Authorization header must use the Bearer scheme: 'Authorization: Bearer <API key>'.")
        case .failure(.empty):
            throw KeywayError(.missingAPIKey, "The Authorization header says Bearer but carries no key: 'Authorization: Bearer <API key>'.")
        case .failure(.notOneWord): throw KeywayError(.malformedAPIKey, "The API key must be a single word with no spaces.")
        }
    }
}

/// `Authorization: Bearer <credential>` (RFC 6750 §2.1), read the same way by every endpoint that
/// takes one: secret keys, user tokens and the metrics token. The scheme is matched without regard
/// to case; spaces and tabs around the scheme and the credential are ignored.
enum BearerCredential {
    enum Problem: Error {
        /// No `Authorization` header, or an empty one.
        case absent
        /// More than one `Authorization` header.
        case several
        /// Another scheme, such as `Basic`, or a bare credential.
        case notBearer
        /// `Bearer` with nothing after it.
        case empty
        /// A credential with a space or tab inside.
        case notOneWord
    }

    static func parse(_ values: [String]) -> Result<Substring, Problem> {
        guard values.count <= 1 else { return .failure(.several) }
        let value = Substring(values.first ?? "").utf8.trimmingSpaces()
        guard !value.isEmpty else { return .failure(.absent) }
        let schemeEnd = value.firstIndex { $0 == UInt8(ascii: " ") || $0 == UInt8(ascii: "\t") } ?? value.endIndex
        let scheme = value[..<schemeEnd]
        guard scheme.count == 6, scheme.elementsEqual("bearer".utf8, by: { ($0 | 0x20) == $1 }) else { return .failure(.notBearer) }
        let credential = value[schemeEnd...].trimmingSpaces()
        guard !credential.isEmpty else { return .failure(.empty) }
        guard !credential.contains(where: { $0 == UInt8(ascii: " ") || $0 == UInt8(ascii: "\t") }) else { return .failure(.notOneWord) }
        return .success(Substring(credential))
    }
}

extension Substring.UTF8View {
    fileprivate func trimmingSpaces() -> Substring.UTF8View {
        let isSpace = { (byte: UInt8) in byte == UInt8(ascii: " ") || byte == UInt8(ascii: "\t") }
        guard let start = firstIndex(where: { !isSpace($0) }), let last = lastIndex(where: { !isSpace($0) }) else {
            return self[endIndex...]
        }
        return self[start...last]
    }
}
