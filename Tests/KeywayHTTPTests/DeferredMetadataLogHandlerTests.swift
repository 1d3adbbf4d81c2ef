import Foundation
import KeywayHTTP
import Logging
import Synchronization
import Testing

@Suite struct DeferredMetadataLogHandlerTests {
    /// Collects what a stream handler writes.
    final class Lines: TextOutputStream, @unchecked Sendable {
        private let written = Mutex<[String]>([])
        func write(_ string: String) { written.withLock { $0.append(string) } }
        var all: [String] { written.withLock { $0 } }
    }

    @Test func writesTheSameLinesAsTheStreamHandlerItWraps() {
        let plain = Lines()
        let deferred = Lines()
        var loggers = [
            Logger(label: "keyway") { StreamLogHandler(label: $0, stream: plain, metadataProvider: nil) },
            Logger(label: "keyway") { DeferredMetadataLogHandler(StreamLogHandler(label: $0, stream: deferred, metadataProvider: nil)) },
        ]
        for index in loggers.indices {
            loggers[index].logLevel = .info
            loggers[index][metadataKey: "hb.request.id"] = "r1"
            loggers[index][metadataKey: "account"] = "acct_1"
            loggers[index].debug("not written at info")
            loggers[index].info("the logger's metadata")
            loggers[index].warning("a line's own metadata wins", metadata: ["account": "acct_2", "key.hint": "kw_dev_…abcd"])
            loggers[index][metadataKey: "account"] = nil
            loggers[index].error("a key removed")
        }
        // Each line starts with a timestamp, to the second.
        func withoutTime(_ lines: [String]) -> [String] { lines.map { String($0.drop { $0 != " " }) } }
        #expect(deferred.all.count == 3)
        #expect(withoutTime(deferred.all) == withoutTime(plain.all))
        #expect(deferred.all[1].contains("account=acct_2 hb.request.id=r1 key.hint=kw_dev_…abcd [Keyway"))
        #expect(!deferred.all[2].contains("account="))
    }

    @Test func setsNoMetadataOnTheStreamHandler() {
        var handler = DeferredMetadataLogHandler(StreamLogHandler(label: "keyway", stream: Lines(), metadataProvider: nil))
        handler[metadataKey: "hb.request.id"] = "r1"
        #expect(handler.metadata == ["hb.request.id": "r1"])
        #expect(handler[metadataKey: "hb.request.id"] == "r1")
    }
}
