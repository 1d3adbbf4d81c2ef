import Foundation

/// Base62 (`0-9A-Za-z`): dense, URL-safe and selectable with a double click,
/// which is why keys use it.
enum Base62 {
    static let alphabet: [UInt8] = Array("0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz".utf8)

    static func isDigit(_ byte: UInt8) -> Bool {
        switch byte {
        case UInt8(ascii: "0")...UInt8(ascii: "9"), UInt8(ascii: "A")...UInt8(ascii: "Z"), UInt8(ascii: "a")...UInt8(ascii: "z"):
            true
        default:
            false
        }
    }

    /// Uniformly random base62 characters from the system's CSPRNG.
    ///
    /// Each character carries log2(62) ≈ 5.95 bits of entropy.
    static func randomString(length: Int) -> String {
        var generator = SystemRandomNumberGenerator()
        var bytes = [UInt8]()
        bytes.reserveCapacity(length)
        // Five characters from each 64-bit draw (62^5 < 2^30), by rejection so each stays uniform:
        // one system call per five characters instead of one per character.
        let limit = UInt64.max - UInt64.max % 916_132_832  // 62^5
        while bytes.count < length {
            let draw = generator.next()
            guard draw < limit else { continue }
            var value = draw % 916_132_832
            for _ in 0..<min(5, length - bytes.count) {
                bytes.append(alphabet[Int(value % 62)])
                value /= 62
            }
        }
        return String(decoding: bytes, as: UTF8.self)
    }

    /// Whether `digits` are `value` in base62, as many digits as there are; allocates nothing.
    static func matches(_ digits: some BidirectionalCollection<UInt8>, _ value: UInt64) -> Bool {
        var remaining = value
        for digit in digits.reversed() {
            guard digit == alphabet[Int(remaining % 62)] else { return false }
            remaining /= 62
        }
        return remaining == 0
    }

    /// `value` in base62, left-padded with `0` to exactly `width` characters.
    static func encode(_ value: UInt64, width: Int) -> [UInt8] {
        var digits = [UInt8](repeating: alphabet[0], count: width)
        var remaining = value
        for index in stride(from: width - 1, through: 0, by: -1) {
            digits[index] = alphabet[Int(remaining % 62)]
            remaining /= 62
        }
        precondition(remaining == 0, "value does not fit in \(width) base62 digits")
        return digits
    }
}

/// CRC-32 (IEEE 802.3, the one zlib and gzip use), so that anyone can
/// recompute a key's checksum with a standard library.
enum CRC32 {
    private static let table: [UInt32] = (0..<256).map { index in
        var value = UInt32(index)
        for _ in 0..<8 {
            value = value & 1 == 1 ? (value >> 1) ^ 0xEDB8_8320 : value >> 1
        }
        return value
    }

    static func checksum(_ bytes: some Sequence<UInt8>) -> UInt32 {
        var crc: UInt32 = 0xFFFF_FFFF
        for byte in bytes {
            crc = table[Int((crc ^ UInt32(byte)) & 0xFF)] ^ (crc >> 8)
        }
        return crc ^ 0xFFFF_FFFF
    }
}

/// Base64url without padding (RFC 4648 §5), as JWTs and browser tokens use it.
enum Base64URL {
    static func encode(_ data: Data) -> String {
        data.base64EncodedString()
            .replacingOccurrences(of: "+", with: "-").replacingOccurrences(of: "/", with: "_").replacingOccurrences(of: "=", with: "")
    }

    static func decode(_ text: some StringProtocol) -> Data? {
        var base64 = text.replacingOccurrences(of: "-", with: "+").replacingOccurrences(of: "_", with: "/")
        base64 += String(repeating: "=", count: (4 - base64.count % 4) % 4)
        return Data(base64Encoded: base64)
    }
}
