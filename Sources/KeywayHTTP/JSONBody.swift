import Foundation
import Hummingbird
import KeywayCore

/// Reads JSON request bodies with a size limit and turns every decoding
/// failure into a `400` that names the field and what it must be.
enum JSONBody {
    /// Enough for a full batch of 1000 users with long names.
    static let maximumSize = 4 * 1024 * 1024

    static func decode<T: Decodable>(_ type: T.Type, from request: Request) async throws -> T {
        let buffer = try await request.body.collect(upTo: maximumSize)
        guard buffer.readableBytes > 0 else {
            throw KeywayError(.invalidJSON, "The request body is empty; send a JSON object.")
        }
        do {
            return try JSONDecoder().decode(T.self, from: Data(buffer.readableBytesView))
        } catch let error as DecodingError {
            throw KeywayError(.invalidJSON, explain(error))
        }
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
