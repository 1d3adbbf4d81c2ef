import Foundation
import HTTPTypes
import Hummingbird
import HummingbirdCore
import KeywayCore
import Logging

extension HTTPField.Name {
    static let xRequestID = Self("x-request-id")!
    static let xAPIVersion = Self("x-api-version")!
    static let pragma = Self("pragma")!
    // Forward-auth: what `/auth` tells the proxy, and the user a client acts for.
    static let keywayAccountID = Self("keyway-account-id")!
    static let keywayEnvironment = Self("keyway-environment")!
    static let keywayKeyHint = Self("keyway-key-hint")!
    static let keywayUserID = Self("keyway-user-id")!
    static let xKeywayUserID = Self("x-keyway-user-id")!
    /// On every response to a rolled key in its grace period: when it stops working (RFC 3339).
    static let keywayKeyExpires = Self("Keyway-Key-Expires")!
}

extension AuthenticatedKey {
    /// Adds `Keyway-Key-Expires` when the key is in a grace period.
    func applyExpiry(to fields: inout HTTPFields) {
        guard let expiresAt else { return }
        fields[.keywayKeyExpires] = KeywayJSON.timestamp(expiresAt)
    }
}
