import Foundation
import Hummingbird
import KeywayCore

/// `POST /keys/verify`: the operator's other services ask whether a key their caller
/// sent is valid, with a service token. A key known to this process costs no query.
struct KeyVerificationController {
    typealias Context = ServiceRequestContext

    let verification: KeyVerification

    var endpoints: RouteCollection<Context> {
        let routes = RouteCollection(context: Context.self)
        routes.post("keys/verify", use: verify)
        return routes
    }

    /// `POST /keys/verify` `{"key": "kw_…"}`: 200 with `valid` either way; what is wrong with
    /// a key is the answer, not an error of the request.
    @Sendable func verify(_ request: Request, context: Context) async throws -> KeyVerdict {
        let body = try await JSONBody.decode(VerifyKeyRequest.self, from: request)
        do {
            return .valid(try await verification.authenticate(Substring(body.key)))
        } catch let error as KeywayError where KeyVerification.refusals.contains(error.code) {
            return .invalid(error)
        }
    }
}

struct VerifyKeyRequest: Decodable {
    let key: String
}

/// `{"valid": true, "accountId", "environment", "keyHint"}` or
/// `{"valid": false, "code", "message", …details}`. Never the key.
enum KeyVerdict: JSONWritable {
    case valid(AuthenticatedKey)
    case invalid(KeywayError)

    func write(to writer: inout JSONWriter) {
        writer.object { object in
            switch self {
            case .valid(let key):
                object.key("accountId")
                object.string(key.environmentID.accountID.rawValue)
                object.key("environment")
                object.string(key.environmentID.environment.rawValue)
                object.key("keyHint")
                object.string(key.hint)
                object.key("valid")
                object.bool(true)
            case .invalid(let error):
                let fixed = [("code", error.code.rawValue), ("message", error.message)]
                let details = error.details.filter { name, _ in name != "valid" && !fixed.contains { $0.0 == name } }
                for (name, value) in (fixed + details.map { ($0.key, $0.value) }).sorted(by: { $0.0 < $1.0 }) {
                    object.key(name)
                    object.string(value)
                }
                object.key("valid")
                object.bool(false)
            }
        }
    }
}
