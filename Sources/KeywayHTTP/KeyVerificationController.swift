import Foundation
import Hummingbird
import KeywayCore

/// `POST /keys/verify`: the operator's other services ask whether a key their caller
/// sent is valid, with a service token. A key known to this process costs no query.
struct KeyVerificationController {
    typealias Context = KeywayRequestContext

    let verification: KeyVerification
    /// Who may ask: checked first, before the body is read.
    let serviceTokens: ServiceTokens

    var endpoints: RouteCollection<Context> {
        let routes = RouteCollection(context: Context.self)
        routes.post("keys/verify", use: verify)
        return routes
    }

    /// `POST /keys/verify` `{"key": "kw_…"}`: 200 with `valid` either way; what is wrong with
    /// a key, its being over its limit included, is the answer, not an error of the request.
    /// The RateLimit fields are not sent: they would describe the key, not the service's
    /// request, and a client honouring them would slow the service down.
    @Sendable func verify(_ request: Request, context: Context) async throws -> Response {
        _ = try await ServiceTokenAuthenticator.authenticate(request, with: serviceTokens)
        var response = try await verdict(request).response(from: request, context: context)
        NoStoreMiddleware<Context>.mark(&response)
        return response
    }

    /// The answer to `POST /keys/verify` when memory alone decides it, for ``KeyVerificationLane``:
    /// a service token and a key this process holds as active, and the usual body. `nil`, with
    /// nothing counted, for any other request, which the router then answers.
    func answerFromMemory(authorization: [String], body: ByteBuffer) -> KeyVerdict? {
        guard let token = try? ServiceTokenAuthenticator.bearerToken(authorization), serviceTokens.authenticatedFromMemory(token) != nil,
            body.readableBytes > 0, let request = VerifyKeyRequest.simple(body),
            let verified = verification.authenticatedFromMemory(Substring(request.key))
        else { return nil }
        return Self.verdict(verified)
    }

    private func verdict(_ request: Request) async throws -> KeyVerdict {
        let buffer = try await JSONBody.collect(request)
        let body = try VerifyKeyRequest.simple(buffer) ?? JSONBody.decode(VerifyKeyRequest.self, from: buffer)
        let verified: KeyVerification.Verified
        do {
            verified = try await verification.authenticate(Substring(body.key))
        } catch let error as KeywayError where KeyVerification.refusals.contains(error.code) {
            return .invalid(error, rateLimit: nil)
        }
        return Self.verdict(verified)
    }

    private static func verdict(_ verified: KeyVerification.Verified) -> KeyVerdict {
        let decision = verified.admission.decision
        if let refusal = verified.admission.refusal { return .invalid(refusal, rateLimit: decision) }
        return .valid(verified.key, rateLimit: decision)
    }
}

struct VerifyKeyRequest: Decodable {
    let key: String

    /// The body every client sends, `{"key":"kw_…"}` with optional whitespace and a key of
    /// `A-Z a-z 0-9 _` only, read without `JSONDecoder` (the largest part of the endpoint's
    /// cost); `nil` for anything else, which the decoder then reads with its usual errors.
    /// For the bodies it accepts it gives what the decoder gives (a test compares them).
    static func simple(_ buffer: ByteBuffer) -> VerifyKeyRequest? {
        let bytes = buffer.readableBytesView
        var index = bytes.startIndex
        func skipWhitespace() {
            while index < bytes.endIndex, [0x20, 0x0A, 0x0D, 0x09].contains(bytes[index]) { index += 1 }
        }
        func expect(_ literal: StaticString) -> Bool {
            let count = literal.utf8CodeUnitCount
            guard bytes.endIndex - index >= count else { return false }
            let matches = literal.withUTF8Buffer { literal in zip(literal, bytes[index..<(index + count)]).allSatisfy { $0 == $1 } }
            if matches { index += count }
            return matches
        }
        skipWhitespace()
        guard expect("{") else { return nil }
        skipWhitespace()
        guard expect(#""key""#) else { return nil }
        skipWhitespace()
        guard expect(":") else { return nil }
        skipWhitespace()
        guard expect(#"""#) else { return nil }
        let start = index
        func isKeyCharacter(_ byte: UInt8) -> Bool {
            switch byte {
            case UInt8(ascii: "0")...UInt8(ascii: "9"), UInt8(ascii: "A")...UInt8(ascii: "Z"), UInt8(ascii: "a")...UInt8(ascii: "z"),
                UInt8(ascii: "_"):
                true
            default: false
            }
        }
        while index < bytes.endIndex, isKeyCharacter(bytes[index]) { index += 1 }
        let end = index
        guard expect(#"""#) else { return nil }
        skipWhitespace()
        guard expect("}") else { return nil }
        skipWhitespace()
        guard index == bytes.endIndex else { return nil }
        return VerifyKeyRequest(key: String(decoding: bytes[start..<end], as: UTF8.self))
    }
}

/// `{"valid": true, "accountId", "environment", "keyHint", "expiresAt"?, "rateLimit"?}` or
/// `{"valid": false, "code", "message", …details, "rateLimit"?}`. Never the key.
/// `rateLimit` is there when the key's environment has a limit: `limit`, `remaining` and
/// `reset`, the RateLimit fields' `q`, `r` and `t`.
enum KeyVerdict: JSONWritable {
    case valid(AuthenticatedKey, rateLimit: RateLimitDecision?)
    case invalid(KeywayError, rateLimit: RateLimitDecision?)

    func write(to writer: inout JSONWriter) {
        var fields: [(String, (inout JSONWriter) -> Void)]
        let rateLimit: RateLimitDecision?
        switch self {
        case .valid(let key, let decision):
            // The answer to almost every call: written straight, its names in sorted order.
            writer.object { object in
                object.key("accountId")
                object.string(key.environmentID.accountID.rawValue)
                object.key("environment")
                object.string(key.environmentID.environment.rawValue)
                if let expiresAt = key.expiresAt {
                    object.key("expiresAt")
                    object.timestamp(expiresAt)
                }
                object.key("keyHint")
                object.string(key.hint)
                if let decision {
                    object.key("rateLimit")
                    Self.write(decision, to: &object)
                }
                object.key("valid")
                object.bool(true)
            }
            return
        case .invalid(let error, let decision):
            rateLimit = decision
            let fixed = [("code", error.code.rawValue), ("message", error.message)]
            let details = error.details.filter { name, _ in !["valid", "rateLimit"].contains(name) && !fixed.contains { $0.0 == name } }
            fields = (fixed + details.map { ($0.key, $0.value) }).map { name, value in (name, { $0.string(value) }) }
            fields.append(("valid", { $0.bool(false) }))
        }
        if let rateLimit {
            fields.append(("rateLimit", { Self.write(rateLimit, to: &$0) }))
        }
        writer.object { object in
            // Sorted, as the encoder's `.sortedKeys` writes them.
            for (name, write) in fields.sorted(by: { $0.0 < $1.0 }) {
                object.key(name)
                write(&object)
            }
        }
    }

    private static func write(_ decision: RateLimitDecision, to writer: inout JSONWriter) {
        writer.object { object in
            object.key("limit")
            object.integer(decision.policy.requestsPerSecond)
            object.key("remaining")
            object.integer(decision.remaining)
            object.key("reset")
            object.integer(decision.resetSeconds)
        }
    }
}
