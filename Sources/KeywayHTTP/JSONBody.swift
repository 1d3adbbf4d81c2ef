import Foundation
import Hummingbird
import KeywayCore

/// Reads JSON request bodies with a size limit and turns every decoding
/// failure into a `400` that names the field and what it must be.
enum JSONBody {
    /// Enough for a full batch of 1000 users with long names.
    static let maximumSize = 4 * 1024 * 1024

    static func decode<T: Decodable>(_ type: T.Type, from request: Request) async throws -> T {
        try decode(T.self, from: try await collect(request))
    }

    /// The whole body, refused when it is empty or over `limit` (``maximumSize`` unless an
    /// endpoint needs less).
    static func collect(_ request: Request, upTo limit: Int = maximumSize) async throws -> ByteBuffer {
        let buffer = try await request.body.collect(upTo: limit)
        guard buffer.readableBytes > 0 else {
            throw KeywayError(.invalidJSON, "The request body is empty; send a JSON object.")
        }
        // JSON over HTTP is UTF-8 (RFC 8259 §8.1), where a NUL byte is never valid. JSONDecoder
        // also reads UTF-16 and UTF-32, whose zero bytes give them away: refused, because there
        // a character such as U+2022 holds a `"` byte, and `holdsArray` would miscount.
        guard !buffer.readableBytesView.contains(0) else {
            throw KeywayError(.invalidJSON, "The request body must be JSON in UTF-8, without NUL bytes.")
        }
        return buffer
    }

    static func decode<T: Decodable>(_ type: T.Type, from buffer: ByteBuffer) throws -> T {
        do {
            return try JSONDecoder().decode(T.self, from: Data(buffer.readableBytesView))
        } catch let error as DecodingError {
            throw KeywayError(.invalidJSON, explain(error))
        }
    }

    /// Whether `buffer` holds an array of more than `limit` elements at most `depth`
    /// containers deep (the top-level value is 1 deep), found without parsing: the scan
    /// stops at the element past the limit, so a body of two million entries costs
    /// what its first thousand do, where decoding it whole takes seconds.
    static func holdsArray(longerThan limit: Int, withinDepth depth: Int, in buffer: ByteBuffer) -> Bool {
        // One entry per open container: an array's element count so far, or nil for an object.
        var open: [Int?] = []
        var inString = false
        var escaped = false
        for byte in buffer.readableBytesView {
            if inString {
                if escaped {
                    escaped = false
                } else if byte == UInt8(ascii: "\\") {
                    escaped = true
                } else if byte == UInt8(ascii: "\"") {
                    inString = false
                }
                continue
            }
            switch byte {
            case UInt8(ascii: " "), UInt8(ascii: "\n"), UInt8(ascii: "\r"), UInt8(ascii: "\t"):
                continue
            case UInt8(ascii: "]"), UInt8(ascii: "}"):
                _ = open.popLast()
                continue
            case UInt8(ascii: ","):
                if let count = open.last ?? nil {
                    open[open.count - 1] = count + 1
                    if count + 1 > limit, open.count <= depth { return true }
                }
                continue
            default:
                break
            }
            // The first byte of a value or key: an empty array holding it now has one element.
            if open.last == 0 { open[open.count - 1] = 1 }
            switch byte {
            case UInt8(ascii: "["): open.append(0)
            case UInt8(ascii: "{"): open.append(nil)
            case UInt8(ascii: "\""): inString = true
            default: break
            }
        }
        return false
    }

    static func explain(_ error: DecodingError) -> String {
        switch error {
        case .typeMismatch(let type, let context):
            return "\(fieldName(context.codingPath)) must be \(describe(type))."
        case .valueNotFound(let type, let context):
            return "\(fieldName(context.codingPath)) must be \(describe(type)), not null."
        case .keyNotFound(let key, let context):
            return "\(fieldName(context.codingPath + [key])) is required."
        case .dataCorrupted(let context):
            if context.codingPath.isEmpty {
                return "The request body is not valid JSON."
            }
            return "\(fieldName(context.codingPath)) is not valid: \(context.debugDescription)"
        @unknown default:
            return "The request body could not be read as JSON."
        }
    }

    private static func fieldName(_ path: [any CodingKey]) -> String {
        guard !path.isEmpty else { return "The request body" }
        let name = path.map { key in key.intValue.map { "[\($0)]" } ?? key.stringValue }
            .joined(separator: ".").replacingOccurrences(of: ".[", with: "[")
        return "Field '\(name)'"
    }

    private static func describe(_ type: Any.Type) -> String {
        switch type {
        case is String.Type, is String?.Type: "a string"
        case is [Any].Type: "an array"
        case is [String: Any].Type: "an object"
        case is Int.Type, is Double.Type: "a number"
        case is Bool.Type: "true or false"
        default: "of type \(type)"
        }
    }
}
