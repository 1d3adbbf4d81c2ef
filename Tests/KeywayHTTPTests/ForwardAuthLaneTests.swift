import Foundation
import HTTPTypes
import Hummingbird
import HummingbirdTesting
import KeywayCore
import Prometheus
import Testing

@testable import KeywayHTTP

/// The lane that answers `/auth` on the event loop (``ForwardAuthLane``) answers exactly what
/// the router answers, for every kind of request, and only those memory decides.
@Suite struct ForwardAuthLaneTests {
    struct Sent: Sendable, CustomStringConvertible {
        var method: HTTPRequest.Method = .get
        var uri = "/auth"
        var headers: HTTPFields
        var body: String? = nil
        var description: String { "\(method) \(uri) \(headers.map(\.name.canonicalName))" }
    }

    struct Answer: Sendable, Equatable {
        let status: HTTPResponse.Status
        let headers: [String]
        let body: String
    }

    /// Every kind of `/auth` request: those the lane answers and those it leaves to the router.
    static func requests(_ keys: [String: String], user: String) -> [Sent] {
        let id: HTTPFields = [.xRequestID: "lane-test-1"]
        func bearer(_ key: String, _ more: HTTPFields = [:]) -> HTTPFields {
            var fields: HTTPFields = [.authorization: "Bearer \(key)", .xRequestID: "lane-test-1"]
            fields.append(contentsOf: more)
            return fields
        }
        let valid = keys["valid"]!
        var sent: [Sent] = []
        for method in [HTTPRequest.Method.get, .head, .post, .put, .patch, .delete, .options, HTTPRequest.Method("PROPFIND")!] {
            for uri in ["/auth", "/auth/v1/workflows/42", "/auth/", "/auth//x", "/auth?x=1", "/auth/a%20b", "/authx"] {
                sent.append(Sent(method: method, uri: uri, headers: bearer(valid)))
            }
        }
        sent += [
            Sent(headers: bearer(keys["limited"]!)),
            Sent(headers: bearer(keys["grace"]!)),
            Sent(headers: bearer(keys["revoked"]!)),
            Sent(headers: bearer(keys["unknown"]!)),
            Sent(headers: bearer(String(valid.dropLast()))),
            Sent(headers: id),
            Sent(headers: bearer("eyJhbGciOiJFUzI1NiJ9.eyJzdWIiOiJ4In0.c2ln")),
            Sent(headers: [.authorization: "Basic dXNlcjpwYXNz", .xRequestID: "lane-test-1"]),
            Sent(headers: bearer(valid, [.authorization: "Bearer \(valid)"])),
            Sent(headers: bearer(valid, [HTTPField.Name("x-keyway-user-id")!: user])),
            Sent(headers: bearer(valid, [HTTPField.Name("x-keyway-user-id")!: "nobody"])),
            Sent(headers: bearer(keys["grace"]!, [HTTPField.Name("x-keyway-user-id")!: "nobody"])),
            Sent(headers: [.authorization: "Bearer \(valid)", .xRequestID: "not sane!"]),
            Sent(headers: [.authorization: "Bearer \(valid)"]),
            Sent(headers: bearer(valid, [.xAPIVersion: "1999-01"])),
            Sent(headers: bearer(valid, [.expect: "100-continue"])),
            Sent(method: .post, headers: bearer(valid), body: "{}"),
        ]
        // Over the limit: the second and third of a key limited to 1 a second are 429s.
        sent += Array(repeating: Sent(headers: bearer(keys["one"]!)), count: 3)
        return sent
    }

    /// Keys in every state a lane meets, by name: `valid`; `limited` (1 000 a second); `grace`
    /// (rolled, 24 hours left); `revoked`; `unknown`; `one` (limited to 1 a second).
    static func keysInEveryState(of server: TestServer) async throws -> [String: String] {
        let development = EnvironmentID(accountID: server.acme.id, environment: .development)
        let production = EnvironmentID(accountID: server.acme.id, environment: .production)
        let globexDevelopment = EnvironmentID(accountID: server.globex.id, environment: .development)
        let globexProduction = EnvironmentID(accountID: server.globex.id, environment: .production)
        try await server.rateLimits.set(.requestsPerSecond(1000), for: development, audit: .system)
        try await server.rateLimits.set(.requestsPerSecond(1), for: globexProduction, audit: .system)
        let grace = server.key(server.acme, .production)
        _ = try await server.keys.roll(for: production, grace: try KeyGrace(parsing: "24h"), createdBy: "test")
        let revoked = server.key(server.globex, .development)
        let valid = try await server.keys.generate(for: globexDevelopment, createdBy: "test").key.revealPlaintext()
        return [
            "valid": valid, "limited": server.key(server.acme, .development), "grace": grace, "revoked": revoked,
            "unknown": GeneratedSecretKey.generate(for: .development).revealPlaintext(), "one": server.key(server.globex, .production),
        ]
    }

    @Test func theLaneAnswersWhatTheRouterAnswers() async throws {
        var server = try await TestServer.make()
        let keys = try await Self.keysInEveryState(of: server)
        let globexDevelopment = EnvironmentID(accountID: server.globex.id, environment: .development)
        let user = try await server.store.createUser(try NewUser(username: "ada", fullName: nil), in: globexDevelopment, at: Date())
        let requests = Self.requests(keys, user: user.id.rawValue)

        // The key limited to 1 a second is left out of the warm-up: its three requests must meet a full bucket.
        func answers(lanes: Bool) async throws -> (answers: [Answer], laneAnswered: Double) {
            try await Self.answers(of: &server, lanes: lanes, to: requests, counter: "keyway_forward_auth_lane_total") { request in
                request.body == nil && !request.headers.contains { $0.value == keys["one"] }
            }
        }
        let (router, _) = try await answers(lanes: false)
        let (lane, laneCount) = try await answers(lanes: true)
        // 16 are the lane's: the valid key on GET, HEAD, DELETE and OPTIONS (the client sends POST,
        // PUT and PATCH chunked: a body may follow) of both plain paths; the key limited, the one
        // in grace, the three request ids; the three of the key limited to 1 a second. At least
        // half: a request sent as soon as the router's answer before it is whole (its body read)
        // can reach the lane before that answer's end has passed it, and then is the router's,
        // which answers the same. The counter is the process's: tests running meanwhile can only add.
        let expected: Double = 8
        #expect(laneCount >= expected, "the lane answered \(laneCount)")
        for (index, request) in requests.enumerated() {
            #expect(lane[index] == router[index], "\(request)")
        }
        // What the comparison rests on: the kinds of answer are all there.
        let statuses = Set(router.map(\.status.code))
        #expect(statuses.isSuperset(of: [200, 401, 404, 429]), "\(statuses)")
        #expect(router.contains { $0.headers.contains { $0.hasPrefix("keyway-key-expires:") } })
        #expect(router.contains { $0.headers.contains { $0.hasPrefix("ratelimit:") } })
    }

    /// At debug the lane writes RequestLogMiddleware's line, with the same metadata.
    @Test func theLaneLogsEachRequestAsTheRouterDoes() async throws {
        var server = try await TestServer.make()
        let key = server.key(server.globex, .development)
        var lines: [String] = []
        for lane in [false, true] {
            server.configuration.lanes = lane
            let id = "lane-log-\(lane)"
            try await server.test(.live) { client in
                _ = try await Self.send(client, Sent(headers: [.authorization: "Bearer \(key)"]))
                _ = try await Self.send(client, Sent(uri: "/auth/v1/x", headers: [.authorization: "Bearer \(key)", .xRequestID: id]))
            }
            let line = try #require(server.logs.all.first { $0.contains("request [") && $0.contains(id) })
            // The duration and Hummingbird's own id differ from request to request.
            let masked = line.replacingOccurrences(of: id, with: "<id>")
                .replacing(/"duration.ms": [0-9.e-]+/, with: "").replacing(/"hb.request.id": [0-9a-f]+/, with: "")
            lines.append(masked)
            #expect(line.contains(#""http.route": /auth/**"#) && line.contains(#""hb.request.id": "#), "\(line)")
        }
        let fields = lines.map { line in
            Set(line.split(whereSeparator: { ",[]".contains($0) }).map { $0.trimmingCharacters(in: .whitespaces) }.filter { !$0.isEmpty })
        }
        #expect(fields[0] == fields[1] && fields[0].count == 6, "\(lines)")
    }

    /// Requests answered by the lane and by the router, pipelined on one connection, come back in order.
    @Test func pipelinedRequestsAreAnsweredInOrder() async throws {
        let server = try await TestServer.make()
        let key = server.key(server.globex, .development)
        try await server.test(.live) { client in
            _ = try await Self.send(client, Sent(headers: [.authorization: "Bearer \(key)"]))
        }
        // Through HummingbirdTesting a request waits for the answer before it; this test needs a raw socket.
        try await server.test(.live) { client in
            guard let port = client.port else {
                Issue.record("no port")
                return
            }
            var text = ""
            for (index, slow) in [false, true, false, false, true, false].enumerated() {
                // x-keyway-user-id sends the request to the router, which looks the user up.
                text +=
                    "GET /auth HTTP/1.1\r\nHost: keyway\r\nAuthorization: Bearer \(key)\r\nx-request-id: r\(index)\r\n"
                    + (slow ? "x-keyway-user-id: nobody\r\n" : "") + "\r\n"
            }
            let reply = try await RawHTTP.exchange(port: port, send: text, expecting: 6)
            let ids = reply.components(separatedBy: "\r\n").filter { $0.lowercased().hasPrefix("x-request-id:") }.map { $0.dropFirst(14) }
            #expect(ids == ["r0", "r1", "r2", "r3", "r4", "r5"], "\(reply)")
            // A 404's JSON body ends without a line break: the next status line follows it at once.
            let statuses = reply.components(separatedBy: "HTTP/1.1 ").dropFirst().map { $0.prefix(3) }
            #expect(statuses == ["200", "404", "200", "200", "404", "200"], "\(reply)")
        }
    }

    /// `Connection: close` is Hummingbird's to act on: the connection closes after the answer.
    @Test func aRequestThatClosesItsConnectionIsAnsweredAndTheConnectionClosed() async throws {
        let server = try await TestServer.make()
        let key = server.key(server.globex, .development)
        try await server.test(.live) { client in
            _ = try await Self.send(client, Sent(headers: [.authorization: "Bearer \(key)"]))
            guard let port = client.port else {
                Issue.record("no port")
                return
            }
            let request = "GET /auth HTTP/1.1\r\nHost: keyway\r\nAuthorization: Bearer \(key)\r\n"
            let reply = try await RawHTTP.exchange(
                port: port,
                send: request + "Connection: close\r\n\r\n" + request + "\r\n",
                expecting: 1,
                thenClosed: true
            )
            #expect(reply.hasPrefix("HTTP/1.1 200") && RawHTTP.completeResponses(in: Array(reply.utf8)) == 1, "\(reply)")
        }
    }

    /// A client that pipelines requests and never reads the answers is held back by TCP, lane or
    /// not: the server stops reading instead of piling answers up in memory.
    @Test(arguments: [false, true]) func aClientThatReadsNoAnswersIsNotReadWithoutBound(lane: Bool) async throws {
        var server = try await TestServer.make()
        server.configuration.lanes = lane
        let key = server.key(server.globex, .development)
        try await server.test(.live) { client in
            _ = try await Self.send(client, Sent(headers: [.authorization: "Bearer \(key)"]))
            guard let port = client.port else {
                Issue.record("no port")
                return
            }
            let request = "GET /auth HTTP/1.1\r\nHost: keyway\r\nAuthorization: Bearer \(key)\r\n\r\n"
            // Far more than the sockets' buffers hold (about 2 MB): a server that reads it all holds its answers.
            let limit = 8 << 20
            let accepted = try await RawHTTP.sendWithoutReading(port: port, request: request, upTo: limit)
            #expect(accepted < limit, "the server read \(accepted) bytes of requests whose answers nobody read")
        }
    }

    static func send(_ client: any TestClientProtocol, _ request: Sent) async throws -> Answer {
        try await client.execute(
            uri: request.uri,
            method: request.method,
            headers: request.headers,
            body: request.body.map { ByteBuffer(string: $0) }
        ) { response in
            // The date moves, and an id the client did not send is made per request.
            let generated = request.headers[.xRequestID] == nil || request.headers[.xRequestID] == "not sane!"
            let headers = response.headers.filter { $0.name != .date && !(generated && $0.name == .xRequestID) }
            let id = response.headers[.xRequestID] ?? ""
            var body = String(buffer: response.body)
            if generated { body = body.replacingOccurrences(of: id, with: "<generated>") }
            #expect(!generated || id.count >= 16, "no request id")
            return Answer(status: response.status, headers: headers.map { "\($0.name.canonicalName): \($0.value)" }.sorted(), body: body)
        }
    }

    /// The answers to `requests` from a server with or without the lanes: sent once (those
    /// `warmingUp` picks) so that every key is in memory, then all of them with full buckets, so
    /// that both runs count the same requests from the same state; and how much the process's
    /// `counter` grew while the answers compared were given.
    static func answers(
        of server: inout TestServer,
        lanes: Bool,
        to requests: [Sent],
        counter: String,
        warmingUp: @escaping @Sendable (Sent) -> Bool
    ) async throws -> (answers: [Answer], laneAnswered: Double) {
        server.configuration.lanes = lanes
        let rateClock = server.rateClock
        rateClock.advance(milliseconds: 60_000)
        return try await server.test(.live) { client in
            for request in requests where warmingUp(request) { _ = try await send(client, request) }
            rateClock.advance(milliseconds: 60_000)
            var answers: [Answer] = []
            let before = try count(counter)
            for request in requests { answers.append(try await send(client, request)) }
            return (answers, try count(counter) - before)
        }
    }

    /// A counter's value in the process's registry.
    static func count(_ counter: String) throws -> Double {
        var buffer: [UInt8] = []
        testMetricsRegistry.emit(into: &buffer)
        let line = String(decoding: buffer, as: UTF8.self).split(separator: "\n").first { $0.hasPrefix(counter + " ") }
        return line.flatMap { Double($0.split(separator: " ").last ?? "") } ?? 0
    }
}

#if canImport(Glibc)
import Glibc
#endif

/// HTTP/1.1 over a plain socket, for what a client library does not do (pipelining).
enum RawHTTP {
    struct Failure: Error, CustomStringConvertible {
        let description: String
    }

    /// Sends `text` on one connection and reads until `expecting` whole responses have arrived,
    /// and with `thenClosed` on until the server closes the connection.
    static func exchange(port: Int, send text: String, expecting: Int, thenClosed: Bool = false) async throws -> String {
        try await onThreadOfItsOwn {
            try blockingExchange(port: port, send: text, expecting: expecting, thenClosed: thenClosed)
        }
    }

    /// Runs blocking `work` on a thread of its own: blocked on Swift's few concurrency threads,
    /// or on NIO's thread pool (bcrypt's), it would starve the servers under test.
    static func onThreadOfItsOwn<Value: Sendable>(_ work: @escaping @Sendable () throws -> Value) async throws -> Value {
        try await withCheckedThrowingContinuation { continuation in
            Thread { continuation.resume(with: Result { try work() }) }.start()
        }
    }

    private static func blockingExchange(port: Int, send text: String, expecting: Int, thenClosed: Bool) throws -> String {
        let socket = try connected(port: port)
        defer { close(socket) }
        var timeout = timeval(tv_sec: 5, tv_usec: 0)
        setsockopt(socket, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
        let bytes = Array(text.utf8)
        guard write(socket, bytes, bytes.count) == bytes.count else { throw Failure(description: "write: \(errno)") }
        var received: [UInt8] = []
        var buffer = [UInt8](repeating: 0, count: 65536)
        while completeResponses(in: received) < expecting {
            let count = read(socket, &buffer, buffer.count)
            guard count > 0 else { throw Failure(description: "read \(count) after: \(String(decoding: received, as: UTF8.self))") }
            received += buffer[..<count]
        }
        while thenClosed {
            let count = read(socket, &buffer, buffer.count)
            guard count >= 0 else { throw Failure(description: "still open after: \(String(decoding: received, as: UTF8.self))") }
            if count == 0 { break }
            received += buffer[..<count]
        }
        return String(decoding: received, as: UTF8.self)
    }

    /// Sends `request` over and over on one connection without reading anything, until `limit`
    /// bytes are sent or the server has taken nothing for two seconds; returns the bytes sent.
    static func sendWithoutReading(port: Int, request: String, upTo limit: Int) async throws -> Int {
        try await onThreadOfItsOwn { try sendWithoutReadingBlocking(port: port, request: request, upTo: limit) }
    }

    private static func sendWithoutReadingBlocking(port: Int, request: String, upTo limit: Int) throws -> Int {
        // Small buffers on this side, so that what the server holds back shows.
        let socket = try connected(port: port, buffers: 16 << 10)
        defer { close(socket) }
        var timeout = timeval(tv_sec: 2, tv_usec: 0)
        setsockopt(socket, SOL_SOCKET, SO_SNDTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
        let chunk = Array(String(repeating: request, count: (64 << 10) / request.utf8.count).utf8)
        var sent = 0
        var offset = 0
        while sent < limit {
            let count = chunk[offset...].withUnsafeBytes { write(socket, $0.baseAddress, $0.count) }
            if count < 0 && (errno == EAGAIN || errno == EWOULDBLOCK) { break }
            guard count > 0 else { throw Failure(description: "write: \(errno) after \(sent) bytes") }
            sent += count
            offset = (offset + count) % chunk.count
        }
        return sent
    }

    /// A socket connected to the server on loopback, with `buffers` as its send and receive buffers.
    static func connected(port: Int, buffers: Int32? = nil) throws -> Int32 {
        let socket = Glibc.socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard socket >= 0 else { throw Failure(description: "socket: \(errno)") }
        if var size = buffers {
            setsockopt(socket, SOL_SOCKET, SO_SNDBUF, &size, socklen_t(MemoryLayout<Int32>.size))
            setsockopt(socket, SOL_SOCKET, SO_RCVBUF, &size, socklen_t(MemoryLayout<Int32>.size))
        }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = in_port_t(UInt16(port).bigEndian)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        let result = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(socket, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        guard result == 0 else {
            close(socket)
            throw Failure(description: "connect: \(errno)")
        }
        return socket
    }

    /// How many whole responses (head, and a body of `Content-Length` bytes) `bytes` holds.
    static func completeResponses(in bytes: [UInt8]) -> Int {
        let separator = Array("\r\n\r\n".utf8)
        var start = 0
        var count = 0
        while let end = bytes.indices.dropFirst(start).first(where: { bytes[$0...].starts(with: separator) }) {
            let head = String(decoding: bytes[start..<end], as: UTF8.self).lowercased()
            let length =
                head.components(separatedBy: "\r\n").first { $0.hasPrefix("content-length:") }
                .flatMap { Int($0.dropFirst(15).trimmingCharacters(in: .whitespaces)) } ?? 0
            let next = end + separator.count + length
            guard next <= bytes.count else { break }
            count += 1
            start = next
        }
        return count
    }
}
