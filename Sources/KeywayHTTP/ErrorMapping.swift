import Foundation
import HTTPTypes
import Hummingbird
import KeywayCore
import Logging
import Metrics
import NIOHTTP1
import Synchronization

// The one place where failures become HTTP responses. Domain errors carry a
// code and no HTTP; this file gives each code its status.

extension KeywayError {
    /// The HTTP status for each code. Unknown codes are server bugs: 500.
    var status: HTTPResponse.Status {
        switch code {
        case .missingAPIKey, .malformedAPIKey, .invalidAPIKey, .revokedAPIKey, .userTokenNotAccepted, .metricsTokenRequired: .unauthorized
        case .missingServiceToken, .invalidServiceToken, .revokedServiceToken, .apiKeyNotAccepted, .invalidReportSignature: .unauthorized
        case .requestTimeout: .requestTimeout
        case .missingUserToken, .malformedUserToken, .secretKeyNotAccepted, .unsupportedTokenAlgorithm, .invalidTokenSignature,
            .invalidTokenAudience, .invalidTokenIssuer, .tokenExpired, .tokenNotYetValid, .tokenUserDeleted:
            .unauthorized
        case .userNotFound, .accountNotFound, .routeNotFound, .webhookEndpointNotFound, .webhookDeliveryNotFound, .memberNotFound: .notFound
        case .forbiddenByRole: .forbidden
        case .invitationNotValid: .gone
        case .methodNotAllowed: .methodNotAllowed
        case .usernameTaken, .emailTaken, .activeKeyChanged, .serviceTokenNameTaken, .tooManyWebhookEndpoints, .lastOwner, .alreadyAMember:
            .conflict
        case .bodyTooLarge: .contentTooLarge
        case .tooManyKeyGenerations, .rateLimited: .tooManyRequests
        case .serviceUnavailable: .serviceUnavailable
        case .apiKeyInQuery, .invalidInput, .invalidJSON, .unsupportedAPIVersion, .invalidCursor, .batchTooLarge, .noValidUsers,
            .invalidUsers, .badRequest:
            .badRequest
        default: .internalServerError
        }
    }

    /// RFC 6750: no `error` attribute when no bearer credentials were sent.
    var wwwAuthenticate: String? {
        switch code {
        case .missingAPIKey, .missingUserToken, .missingServiceToken: #"Bearer realm="keyway""#
        case .metricsTokenRequired: #"Bearer realm="keyway-metrics""#
        case .malformedAPIKey, .invalidAPIKey, .revokedAPIKey, .userTokenNotAccepted, .malformedUserToken, .secretKeyNotAccepted,
            .unsupportedTokenAlgorithm, .invalidTokenSignature, .invalidTokenAudience, .invalidTokenIssuer, .tokenExpired, .tokenNotYetValid,
            .tokenUserDeleted, .invalidServiceToken, .revokedServiceToken, .apiKeyNotAccepted:
            #"Bearer realm="keyway", error="invalid_token""#
        default: nil
        }
    }
}

/// Turns every error into `{"message", "code", "requestId", …}` with the
/// right status. Anything unexpected becomes a 500 and is logged here, once.
struct ErrorMappingMiddleware: RouterMiddleware {
    typealias Context = KeywayRequestContext

    /// The methods each path answers, to tell a wrong method from a wrong path.
    let routes: RouteMethods

    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        do {
            return try await next(request, context)
        } catch let error as any HTTPResponseError where error.status == .notFound {
            let allowed = routes.methods(forPath: request.uri.path)
            guard !allowed.isEmpty else {
                let notFound = KeywayError(.routeNotFound, "No endpoint matches \(request.method) \(request.uri.path). See /openapi.json.")
                return Self.response(for: notFound, requestID: context.requestID)
            }
            // RFC 9110 §15.5.6: a 405 names the methods the resource does answer.
            let list = allowed.map(\.rawValue).joined(separator: ", ")
            let wrongMethod = KeywayError(.methodNotAllowed, "\(request.uri.path) does not answer \(request.method); it answers \(list).")
            var response = Self.response(for: wrongMethod, requestID: context.requestID)
            response.headers[.allow] = list
            return response
        } catch {
            let keywayError = Self.keywayError(for: error, request: request, context: context)
            return Self.response(for: keywayError, requestID: context.requestID)
        }
    }

    static func keywayError(for error: any Error, request: Request, context: Context) -> KeywayError {
        switch error {
        case let error as KeywayError:
            if error.status == .internalServerError {
                context.logger.error("unmapped error code", metadata: ["error.code": "\(error.code)"])
            }
            return error
        case is HTTPParserError:
            // The client's fault (a body that ended early, a Transfer-Encoding we do not speak), not ours.
            context.logger.notice("malformed request", metadata: ["error": "\(error)"])
            return KeywayError(.badRequest, "The request is not valid HTTP/1.1: its body ended early or its framing is not supported.")
        case is RequestBodyTimeout:
            return KeywayError(.requestTimeout, "The request body did not arrive in time.")
        case let error as any HTTPResponseError:
            switch error.status {
            case .notFound:
                return KeywayError(.routeNotFound, "No endpoint matches \(request.method) \(request.uri.path). See /openapi.json.")
            case .contentTooLarge:
                return KeywayError(.bodyTooLarge, "The request body is too large.")
            case let status where (400..<500).contains(status.code):
                return KeywayError(.badRequest, "The request was not understood (\(status.code) \(status.reasonPhrase)).")
            default:
                context.logger.error("request failed", metadata: ["error": "\(String(reflecting: error))"])
                return KeywayError(.internalError, "Something went wrong on our side. Quote the request id if you contact support.")
            }
        default:
            // The error's text is logged, never returned: it may describe internals.
            context.logger.error("request failed", metadata: ["error": "\(String(reflecting: error))"])
            return KeywayError(.internalError, "Something went wrong on our side. Quote the request id if you contact support.")
        }
    }

    /// Runs `next`, mapping what it throws to its response here rather than outside: for a
    /// middleware that adds fields to every response it passes, errors included (Hummingbird's
    /// own, such as a body over the limit, as well as Keyway's).
    static func responding(
        to request: Request,
        context: Context,
        next: (Request, Context) async throws -> Response
    ) async -> Response {
        do {
            return try await next(request, context)
        } catch {
            return response(for: keywayError(for: error, request: request, context: context), requestID: context.requestID)
        }
    }

    static func response(for error: KeywayError, requestID: String) -> Response {
        var headers: HTTPFields = [.contentType: "application/json; charset=utf-8"]
        if let challenge = error.wwwAuthenticate {
            headers[.wwwAuthenticate] = challenge
        }
        if error.status == .tooManyRequests, let seconds = error.details["retryAfter"] {
            headers[.retryAfter] = seconds
        }
        // RFC 9457 problem details, as draft-ietf-httpapi-ratelimit-headers-10 §5.1 answers a
        // quota exceeded; the usual fields stay, so clients reading `code` see no change.
        let problem: ErrorBody.Problem? = error.code == .rateLimited ? .quotaExceeded : nil
        if problem != nil { headers[.contentType] = "application/problem+json" }
        // Refused requests are as frequent as served ones under attack: no JSONEncoder here,
        // and the body is written once.
        let body = ErrorBody(error: error, requestID: requestID, problem: problem).jsonBuffer
        return Response(status: error.status, headers: headers, body: .init(byteBuffer: body))
    }
}

/// The error body. `message` stays at the top level so existing SDKs keep working.
struct ErrorBody: JSONWritable {
    let error: KeywayError
    let requestID: String
    /// The problem-details members (RFC 9457) to add, if any.
    var problem: Problem? = nil

    /// A problem type's members beside the usual fields.
    struct Problem {
        let type: String
        let title: String
        let status: Int
        let violatedPolicies: [String]

        /// draft-ietf-httpapi-ratelimit-headers-10 §5.1, for Keyway's one policy.
        static let quotaExceeded = Problem(
            type: "https://iana.org/assignments/http-problem-types#quota-exceeded",
            title: "Request cannot be satisfied as assigned quota has been exceeded",
            status: 429,
            violatedPolicies: ["default"]
        )
    }

    func write(to writer: inout JSONWriter) {
        let fixed = [("message", error.message), ("code", error.code.rawValue), ("requestId", requestID)]
        // Details never replace the three fields every error has, nor the problem's.
        let reserved: Set<String> = problem == nil ? [] : ["type", "title", "status", "violated-policies"]
        let details = error.details.filter { name, _ in !fixed.contains { $0.0 == name } && !reserved.contains(name) }.map { ($0.key, $0.value) }
        var fields: [(String, (inout JSONWriter) -> Void)] = (fixed + details).map { name, value in (name, { $0.string(value) }) }
        if let problem {
            fields += [
                ("type", { $0.string(problem.type) }), ("title", { $0.string(problem.title) }),
                ("status", { $0.integer(problem.status) }),
                ("violated-policies", { $0.array(problem.violatedPolicies) { writer, policy in writer.string(policy) } }),
            ]
        }
        writer.object { object in
            for (name, write) in fields.sorted(by: { $0.0 < $1.0 }) {
                object.key(name)
                write(&object)
            }
        }
    }
}

/// The methods each registered route answers, filled once the router is built.
final class RouteMethods: Sendable {
    private let table = Mutex<[(path: RouterPath, methods: [HTTPRequest.Method])]>([])

    /// Records every route of `router`; call it after the last route is added.
    func record(_ routes: [Router<KeywayRequestContext>.RouteDescription]) {
        var byPath: [String: (path: RouterPath, methods: [HTTPRequest.Method])] = [:]
        for route in routes {
            byPath[route.path.description, default: (route.path, [])].methods.append(route.method)
        }
        table.withLock { $0 = Array(byPath.values) }
    }

    /// The methods of the routes whose path matches `path`, sorted; none when no route matches.
    func methods(forPath path: String) -> [HTTPRequest.Method] {
        let segments = path.split(separator: "/")
        let methods = table.withLock { table in
            table.filter { route in
                route.path.components.count == segments.count && zip(route.path.components, segments).allSatisfy { $0 ~= $1 }
            }.flatMap(\.methods)
        }
        return Set(methods).sorted { $0.rawValue < $1.rawValue }
    }
}
