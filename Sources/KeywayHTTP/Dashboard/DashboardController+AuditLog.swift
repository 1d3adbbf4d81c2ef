import Foundation
import HTTPTypes
import Hummingbird
import KeywayCore

// Settings → Audit log: the account's entries, newest first, filtered and paged.
extension DashboardController {
    static let auditPageSize = 50

    @Sendable func auditLogPage(_ request: Request, context: SignedInRequestContext) async throws -> Response {
        let parameters = request.uri.queryParameters
        var notices: [String] = []
        func chosen<Value>(_ name: String, _ make: (String) -> Value?, what: String) -> Value? {
            guard let text = parameters[name[...]].map(String.init), !text.isEmpty else { return nil }
            guard let value = make(text) else {
                notices.append("'\(text.prefix(64))' is not \(what); showing every one.")
                return nil
            }
            return value
        }
        let event = chosen("event", AuditEvent.init(rawValue:), what: "an event")
        let environment = chosen("environment", Environment.init(rawValue:), what: "an environment")
        let before = chosen("before", Self.auditCursor, what: "a page of this log")
        let found = try await store.auditEntries(
            for: context.account.id,
            matching: AuditQuery(event: event, environment: environment, before: before, limit: Self.auditPageSize + 1)
        )
        let entries = found.prefix(Self.auditPageSize)
        var data: [String: Any] = [
            "entries": entries.map(Self.row),
            "isEmpty": entries.isEmpty,
            "events": AuditEvent.allCases.map { ["value": $0.rawValue, "selected": $0 == event] },
            "environments": Environment.allCases.map { ["value": $0.rawValue, "label": $0.label, "selected": $0 == environment] },
        ]
        if found.count > Self.auditPageSize, let last = entries.last {
            var next = URLComponents()
            next.queryItems = [
                event.map { URLQueryItem(name: "event", value: $0.rawValue) },
                environment.map { URLQueryItem(name: "environment", value: $0.rawValue) },
                URLQueryItem(name: "before", value: "\(last.at.keywayMilliseconds)_\(last.id)"),
            ].compactMap { $0 }
            data["older"] = "/dashboard/settings/audit-log?" + (next.percentEncodedQuery ?? "")
        }
        return pages.render(
            "audit-log",
            title: "Audit log",
            section: .auditLog,
            csrf: context.csrfToken,
            signedIn: context.signedIn,
            notice: notices.isEmpty ? nil : notices.joined(separator: " "),
            data: data
        )
    }

    /// `<milliseconds>_<entry id>`: where the next page starts. Times outside 1970…9999 are no
    /// page of this log (and would not survive the stores' millisecond arithmetic).
    static func auditCursor(_ text: String) -> (at: Date, id: String)? {
        guard let separator = text.firstIndex(of: "_"), let milliseconds = Int64(text[..<separator]),
            (0...253_402_300_799_999).contains(milliseconds)
        else { return nil }
        let id = String(text[text.index(after: separator)...])
        guard id.hasPrefix("aud_"), id.count <= 64 else { return nil }
        return (Date(keywayMilliseconds: milliseconds), id)
    }

    static func row(_ entry: AuditEntry) -> [String: Any] {
        var row: [String: Any] = [
            "id": entry.id,
            "at": DashboardPages.display(entry.at, seconds: true),
            "atISO": KeywayJSON.timestamp(entry.at),
            "event": entry.event.rawValue,
            "environment": entry.environment?.rawValue ?? "—",
            "actor": entry.actor,
            "resource": entry.resourceHint ?? entry.resourceID ?? "—",
            "client": [entry.clientAddress, entry.userAgent].compactMap { $0 }.joined(separator: " · "),
            "details": entry.details.sorted { $0.key < $1.key }.map { ["name": $0.key, "value": $0.value] },
        ]
        if let hashedToken = entry.hashedToken { row["hashedToken"] = hashedToken }
        if entry.event == .keyReportedLeaked { row["leaked"] = true }
        return row
    }
}
