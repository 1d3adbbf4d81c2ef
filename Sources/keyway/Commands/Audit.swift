import ArgumentParser
import Foundation
import KeywayCore

struct Audit: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Read the audit log.",
        subcommands: [Export.self]
    )

    struct Export: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Write an account's audit log as JSON Lines, newest first.",
            discussion: """
                One JSON object per line, to standard output: id, at (RFC 3339), accountId, environment, event, actor,
                resourceType, resourceId, resourceHint, hashedToken (base64 SHA-256 of a key), clientAddress, userAgent,
                requestId and details; absent fields are left out. Never a key or a secret. With --operator, the entries
                that belong to no account (service tokens). How many were written goes to standard error.
                """
        )

        @Option(help: ArgumentHelp("The account's id (acct_…).", valueName: "id"))
        var account: String?

        @Flag(help: "Export the operator's entries (service tokens), which belong to no account.")
        var `operator` = false

        @Option(help: ArgumentHelp("Only entries at or after this time (RFC 3339, e.g. 2026-11-01T00:00:00Z).", valueName: "time"))
        var since: String?

        @OptionGroup var database: DatabaseOptions

        func validate() throws {
            guard (account == nil) != !`operator` else { throw ValidationError("Give --account ID or --operator, not both.") }
            if let since, Self.date(since) == nil {
                throw ValidationError("--since must be an RFC 3339 time such as 2026-11-01T00:00:00Z, not '\(since)'.")
            }
        }

        static func date(_ text: String) -> Date? {
            (try? Date(text, strategy: .iso8601)) ?? (try? Date(text, strategy: Date.ISO8601FormatStyle(includingFractionalSeconds: true)))
        }

        func run() async throws {
            let accountID = account.map(AccountID.init(rawValue:))
            let since = self.since.flatMap(Self.date)
            try await database.withStore { (store: any KeywayStore) async throws -> Void in
                if let accountID { try await store.requireAccount(accountID) }
                let encoder = JSONEncoder()
                encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
                var query = AuditQuery(since: since, limit: 500)
                var written = 0
                while true {
                    let page = try await store.auditEntries(for: accountID, matching: query)
                    var lines = Data()
                    for entry in page {
                        lines.append(try encoder.encode(entry))
                        lines.append(UInt8(ascii: "\n"))
                    }
                    FileHandle.standardOutput.write(lines)
                    written += page.count
                    guard page.count == query.limit, let last = page.last else { break }
                    query.before = (last.at, last.id)
                }
                FileHandle.standardError.write(Data("Exported \(written) audit entr\(written == 1 ? "y" : "ies").\n".utf8))
            }
        }
    }
}
