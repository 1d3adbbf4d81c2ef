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
}
