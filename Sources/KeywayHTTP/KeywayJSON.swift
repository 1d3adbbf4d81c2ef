import Foundation
import Hummingbird
import KeywayCore
import NIOCore

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

enum KeywayJSON {
    /// Shared because building an encoder per response shows up on the hot path.
    static let encoder: JSONEncoder = {
        let encoder = JSONEncoder()
        // Sorted keys make responses byte-for-byte reproducible for docs and tests.
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        encoder.dateEncodingStrategy = .custom { date, encoder in
            var container = encoder.singleValueContainer()
            try container.encode(timestamp(date))
        }
        return encoder
    }()

    /// RFC 3339 in UTC with milliseconds, e.g. `2026-11-29T13:00:00.000Z` (``Foundation/Date/keywayTimestamp``).
    static func timestamp(_ date: Date) -> String {
        date.keywayTimestamp
    }
}
