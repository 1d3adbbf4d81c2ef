import Foundation
import HTTPTypes
import Hummingbird
import HummingbirdTesting
import KeywayCore
import Testing

/// Secret keys and user tokens are read from `Authorization` by one parser, so every header
/// shape means the same on `/whoami` and on `/me`.
@Suite struct BearerCredentialTests {
    enum Outcome: String { case accepted, missing, malformed }

    static let shapes: [(headers: [String], outcome: Outcome)] = [
        ([], .missing),
        (["Basic dXNlcjpwYXNz"], .missing),
        (["<credential>"], .missing),
        (["Bearer"], .missing),
        (["Bearer \t "], .missing),
        (["Bearer <credential>"], .accepted),
        (["bearer\t<credential>"], .accepted),
        ([" BEARER   <credential> \t"], .accepted),
        (["Bearer <credential> extra"], .malformed),
        (["Bearer <credential>", "Bearer <credential>"], .malformed),
    ]

    @Test func theSameHeaderMeansTheSameForSecretKeysAndUserTokens() async throws {
        let server = try await TestServer.make()
        try await server.test { client in
            let key = server.key(server.acme, .development)
            let id = try await client.createUser("ada", key: key)
            let token = try #require(try await client.call(.get, "/users/\(id)/token", key: key)["token"] as? String)
            for (shape, expected) in Self.shapes {
                for (path, credential, missing, malformed) in [
                    ("/whoami", key, "missing_api_key", "malformed_api_key"), ("/me", token, "missing_user_token", "malformed_user_token"),
                ] {
                    var headers = HTTPFields()
                    for value in shape {
                        headers.append(HTTPField(name: .authorization, value: value.replacingOccurrences(of: "<credential>", with: credential)))
                    }
                    let response = try await client.call(.get, path, headers: headers)
                    let outcome: Outcome? =
                        switch response.code {
                        case nil where response.status == .ok: .accepted
                        case missing: .missing
                        case malformed: .malformed
                        default: nil
                        }
                    #expect(outcome == expected, "\(path) with \(shape.count) header(s) \(shape.first ?? ""): \(response.status) \(response.text)")
                }
            }
        }
    }
}
