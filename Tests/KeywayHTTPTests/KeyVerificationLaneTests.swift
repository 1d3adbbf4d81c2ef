import Foundation
import HTTPTypes
import Hummingbird
import HummingbirdTesting
import KeywayCore
import Prometheus
import Testing

@testable import KeywayHTTP

/// The lane that answers `POST /keys/verify` on the event loop (``KeyVerificationLane``)
/// answers exactly what the router answers, and only what memory decides.
@Suite struct KeyVerificationLaneTests {
    typealias Sent = ForwardAuthLaneTests.Sent

    @Test func theLaneAnswersWhatTheRouterAnswers() async throws {
        var server = try await TestServer.make()
        let keys = try await ForwardAuthLaneTests.keysInEveryState(of: server)
        let (valid, grace, revoked) = (keys["valid"]!, keys["grace"]!, keys["revoked"]!)
        let token = try await server.serviceTokens.create(name: "gateway").token.revealPlaintext()
        let revokedToken = try await server.serviceTokens.create(name: "old").token.revealPlaintext()
        _ = try await server.serviceTokens.revoke(.name("old"))
        let (limited, one) = (keys["limited"]!, keys["one"]!)

        func verify(
            _ key: String,
            token: String? = token,
            body: String? = nil,
            method: HTTPRequest.Method = .post,
            uri: String = "/keys/verify",
            _ more: HTTPFields = [:]
        ) -> Sent {
            var fields: HTTPFields = [.xRequestID: "verify-lane-1"]
            if let token { fields[.authorization] = "Bearer \(token)" }
            for field in more { fields[field.name] = field.value }
            return Sent(method: method, uri: uri, headers: fields, body: body ?? #"{"key":"\#(key)"}"#)
        }
        let requests: [Sent] = [
            verify(valid), verify(limited), verify(grace), verify(revoked), verify(keys["unknown"]!),
            verify(String(valid.dropLast())), verify("eyJhbGciOiJFUzI1NiJ9.eyJzdWIiOiJ4In0.c2ln"),
            verify(valid, body: "  {\n \"key\" : \"\(valid)\" }\n"), verify(valid, body: #"{"key":"\#(valid)","extra":1}"#),
            verify(valid, body: #"{"key":"\#(valid)""#), verify(valid, body: "[]"), verify(valid, body: #"{"key":"\u0041"}"#),
            verify(valid, token: nil), verify(valid, token: revokedToken), verify(valid, token: valid), verify(valid, token: "kwst_nothing"),
            verify(valid, [.xAPIVersion: "2025-09"]), verify(valid, [.xAPIVersion: "1999-01"]), verify(valid, [.expect: "100-continue"]),
            verify(valid, uri: "/keys/verify?x=1"), verify(valid, method: .put), verify(valid, [.xRequestID: "not sane!"]),
            Sent(method: .post, uri: "/keys/verify", headers: [.authorization: "Bearer \(token)"], body: #"{"key":"\#(valid)"}"#),
            verify(one), verify(one), verify(one),
        ]

        // The key limited to 1 a second is left out of the warm-up: its three requests must meet a full bucket.
        func answers(lanes: Bool) async throws -> (answers: [ForwardAuthLaneTests.Answer], laneAnswered: Double) {
            try await ForwardAuthLaneTests.answers(of: &server, lanes: lanes, to: requests, counter: "keyway_verification_lane_total") {
                !($0.body ?? "").contains(one)
            }
        }
        let (router, _) = try await answers(lanes: false)
        let (lane, laneCount) = try await answers(lanes: true)
        // 9 are the lane's: the valid, limited and in-grace keys, the spaced body, the two request
        // ids and the three of the key limited to 1 a second. At least half: see the /auth lane's test.
        let expected: Double = 5
        #expect(laneCount >= expected, "the lane answered \(laneCount)")
        for (index, request) in requests.enumerated() {
            #expect(lane[index] == router[index], "\(request) \(request.body ?? "")")
        }
        let bodies = router.map(\.body)
        #expect(bodies.contains { $0.contains(#""valid":true"#) && $0.contains("expiresAt") })
        #expect(bodies.contains { $0.contains("rate_limited") })
        #expect(bodies.contains { $0.contains("revoked_api_key") })
        #expect(Set(router.map(\.status.code)).isSuperset(of: [200, 400, 401]), "\(router.map(\.status.code))")
    }

    /// Verifications answered by the lane and by the router, pipelined on one connection, come back in order.
    @Test func pipelinedVerificationsAreAnsweredInOrder() async throws {
        let server = try await TestServer.make()
        let key = server.key(server.globex, .development)
        let token = try await server.serviceTokens.create(name: "gateway").token.revealPlaintext()
        try await server.test(.live) { client in
            _ = try await ForwardAuthLaneTests.send(
                client,
                Sent(method: .post, uri: "/keys/verify", headers: [.authorization: "Bearer \(token)"], body: #"{"key":"\#(key)"}"#)
            )
            guard let port = client.port else {
                Issue.record("no port")
                return
            }
            var text = ""
            for (index, slow) in [false, true, false, false, true, false].enumerated() {
                // A body the quick reader does not take (a second field) goes to the router.
                let body = slow ? #"{"key":"\#(key)","x":1}"# : #"{"key":"\#(key)"}"#
                text +=
                    "POST /keys/verify HTTP/1.1\r\nHost: keyway\r\nAuthorization: Bearer \(token)\r\nx-request-id: r\(index)\r\n"
                    + "Content-Length: \(body.utf8.count)\r\n\r\n" + body
            }
            // And one /auth in between, the other lane's.
            text += "GET /auth HTTP/1.1\r\nHost: keyway\r\nAuthorization: Bearer \(key)\r\nx-request-id: r6\r\n\r\n"
            let reply = try await RawHTTP.exchange(port: port, send: text, expecting: 7)
            let ids = reply.components(separatedBy: "\r\n").compactMap { line in
                line.lowercased().hasPrefix("x-request-id:") ? line.dropFirst(14).trimmingCharacters(in: .whitespaces) : nil
            }
            #expect(ids == ["r0", "r1", "r2", "r3", "r4", "r5", "r6"], "\(reply)")
            #expect(reply.components(separatedBy: #""valid":true"#).count == 7, "\(reply)")
        }
    }

    /// A client that pipelines verifications and reads no answers is read no further than the
    /// router would read it: the lane holds nothing while answers cannot go out.
    @Test(arguments: [false, true]) func aClientThatReadsNoAnswersIsNotReadWithoutBound(lane: Bool) async throws {
        var server = try await TestServer.make()
        server.configuration.lanes = lane
        let key = server.key(server.globex, .development)
        let token = try await server.serviceTokens.create(name: "gateway").token.revealPlaintext()
        let body = #"{"key":"\#(key)"}"#
        try await server.test(.live) { client in
            _ = try await ForwardAuthLaneTests.send(
                client,
                Sent(method: .post, uri: "/keys/verify", headers: [.authorization: "Bearer \(token)"], body: body)
            )
            guard let port = client.port else {
                Issue.record("no port")
                return
            }
            let request =
                "POST /keys/verify HTTP/1.1\r\nHost: keyway\r\nAuthorization: Bearer \(token)\r\n"
                + "Content-Length: \(body.utf8.count)\r\n\r\n" + body
            let limit = 8 << 20
            let accepted = try await RawHTTP.sendWithoutReading(port: port, request: request, upTo: limit)
            #expect(accepted < limit, "the server read \(accepted) bytes of requests whose answers nobody read")
        }
    }

}
