import Foundation
import Testing

@testable import KeywayHTTP

@Suite struct TimestampTests {
    /// Keyway keeps milliseconds exactly; Foundation's style may print 122 for a stored 123 (binary fractions),
    /// so seconds are compared with Foundation and milliseconds with the stored value.
    @Test(arguments: [0, 1, 999, 1_764_000_000_123, 1_700_000_000_000, 4_102_444_799_999, 951_782_400_500] as [Int64])
    func timestampsAreRFC3339WithExactMilliseconds(milliseconds: Int64) {
        let date = Date(timeIntervalSince1970: Double(milliseconds) / 1000)
        let wholeSeconds = Date(timeIntervalSince1970: Double(milliseconds / 1000))
        let expectedSeconds = wholeSeconds.formatted(Date.ISO8601FormatStyle()).dropLast()  // without "Z"
        let expected = "\(expectedSeconds).\(String(format: "%03d", Int(milliseconds % 1000)))Z"
        #expect(KeywayJSON.timestamp(date) == expected)
    }
}
