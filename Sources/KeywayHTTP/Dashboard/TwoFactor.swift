import CQRCodeGen
import ExtrasBase64
import Foundation
import HummingbirdOTP
import KeywayCore

/// Time-based one-time passwords (RFC 6238: HMAC-SHA-1, 30-second steps, 6 digits), as every
/// authenticator app computes them, through HummingbirdOTP.
struct TwoFactorCodes: Sendable {
    /// Seconds a code lasts.
    static let step = 30
    /// Codes of the step before and after are accepted too: a phone's clock drifts, and a code
    /// typed at the end of its step arrives in the next.
    static let drift = 1
    /// The secret, as HummingbirdOTP takes it: the HMAC key is its UTF-8 bytes.
    let secret: String
    let digits: Int

    init(secret: String, digits: Int = 6) {
        self.secret = secret
        self.digits = digits
    }

    /// A new random secret.
    static func generate() -> TwoFactorCodes {
        TwoFactorCodes(secret: TwoFactorSecrets.generateSecret())
    }

    private var totp: TOTP { TOTP(secret: secret, length: digits, timeStep: Self.step, hashFunction: .sha1) }

    /// The step `date` falls in: seconds since 1970 divided by 30.
    static func step(at date: Date) -> Int64 { Int64(floor(date.timeIntervalSince1970 / Double(step))) }

    /// The code of one step, zero-padded (`004917`).
    func code(atStep step: Int64) -> String {
        let value = totp.compute(date: Date(timeIntervalSince1970: Double(step * Int64(Self.step))))
        let digits = String(value)
        return String(repeating: "0", count: max(0, self.digits - digits.count)) + digits
    }

    /// The step whose code `typed` is, within the drift around `date`, and later than
    /// `after` (the last step used: a code works once); `nil` when none is.
    func matchingStep(_ typed: String, at date: Date, after lastUsed: Int64?) -> Int64? {
        let typed = typed.filter { !$0.isWhitespace }
        guard typed.count == digits, typed.allSatisfy(\.isASCIIDigit) else { return nil }
        let now = Self.step(at: date)
        // Every candidate is compared, in constant time, whatever matches first.
        var found: Int64?
        for step in (now - Int64(Self.drift))...(now + Int64(Self.drift)) where step > (lastUsed ?? .min) {
            if BrowserToken.constantTimeEquals(code(atStep: step), typed), found == nil { found = step }
        }
        return found
    }

    /// The secret as authenticator apps take it by hand: base32, in groups of four.
    var manualEntry: String {
        stride(from: 0, to: base32.count, by: 4).map { start in
            let from = base32.index(base32.startIndex, offsetBy: start)
            return String(base32[from..<(base32.index(from, offsetBy: 4, limitedBy: base32.endIndex) ?? base32.endIndex)])
        }.joined(separator: " ")
    }

    /// What the otpauth URI carries too: the key's bytes in base32, unpadded.
    private var base32: String { String(base32Encoding: secret.utf8, options: .omitPaddingCharacter) }

    /// `otpauth://totp/Keyway:EMAIL?secret=…&issuer=Keyway`, what the QR code holds.
    func authenticatorURI(account: String, issuer: String) -> String {
        totp.createAuthenticatorURL(label: "\(issuer):\(account)", issuer: issuer)
    }
}

extension Character {
    fileprivate var isASCIIDigit: Bool { isASCII && isNumber }
}

/// One-time recovery codes: ten, shown once, stored as keyed digests
/// (``TwoFactorSecrets/recoveryDigest(_:for:)``).
enum RecoveryCodes {
    static let count = 10
    private static let alphabet = Array("abcdefghjkmnpqrstuvwxyz23456789")

    /// `count` new codes like `k7mq2-vx9ht`.
    static func generate() -> [String] {
        var generator = SystemRandomNumberGenerator()
        return (0..<count).map { _ in
            let characters = (0..<10).map { _ in alphabet[Int.random(in: 0..<alphabet.count, using: &generator)] }
            return String(characters[0..<5]) + "-" + String(characters[5...])
        }
    }

    /// Whether `typed` has a recovery code's shape (ten letters and digits, however spaced),
    /// where a TOTP code has six digits.
    static func looksLikeOne(_ typed: String) -> Bool { typed.filter { $0.isLetter || $0.isNumber }.count == 10 }
}

/// A QR code as inline SVG, drawn by Nayuki's qrcodegen: one path of dark modules, with the
/// four-module quiet zone the standard asks for.
enum QRCodeSVG {
    /// Bytes qrcodegen needs for the largest symbol (version 40): `qrcodegen_BUFFER_LEN_MAX`,
    /// a macro Swift does not import.
    static let bufferLength = ((40 * 4 + 17) * (40 * 4 + 17) + 7) / 8 + 1

    /// The SVG of `text` at medium error correction; `nil` when it does not fit in a QR code.
    static func render(_ text: String, label: String) -> String? {
        var qrcode = [UInt8](repeating: 0, count: bufferLength)
        var scratch = [UInt8](repeating: 0, count: bufferLength)
        let encoded = text.withCString { text in
            qrcodegen_encodeText(
                text,
                &scratch,
                &qrcode,
                qrcodegen_Ecc_MEDIUM,
                qrcodegen_VERSION_MIN,
                qrcodegen_VERSION_MAX,
                qrcodegen_Mask_AUTO,
                true
            )
        }
        guard encoded else { return nil }
        let size = Int(qrcodegen_getSize(qrcode))
        let border = 4
        var path = ""
        for y in 0..<size {
            for x in 0..<size where qrcodegen_getModule(qrcode, Int32(x), Int32(y)) {
                path += "M\(x + border),\(y + border)h1v1h-1z"
            }
        }
        let side = size + 2 * border
        return """
            <svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 \(side) \(side)" width="\(side * 5)" height="\(side * 5)" \
            role="img" aria-label="\(label)" shape-rendering="crispEdges"><rect width="100%" height="100%" fill="#fff"/>\
            <path d="\(path)" fill="#000"/></svg>
            """
    }
}
