import Foundation
import HTTPTypes
import Hummingbird
import KeywayCore
import Mustache

/// The dashboard's templates and static files, loaded once from the binary's own resources.
struct DashboardPages: Sendable {
    let library: MustacheLibrary
    let staticFiles: [String: (contentType: String, bytes: [UInt8])]

    /// Loads everything under `Resources/Dashboard`.
    static let bundled: DashboardPages = {
        guard let root = Bundle.module.url(forResource: "Dashboard", withExtension: nil) else {
            preconditionFailure("the Dashboard resources are missing from the KeywayHTTP bundle")
        }
        var library = MustacheLibrary()
        let templates = root.appendingPathComponent("templates")
        for name in (try? FileManager.default.contentsOfDirectory(atPath: templates.path)) ?? [] where name.hasSuffix(".mustache") {
            guard let text = try? String(contentsOf: templates.appendingPathComponent(name), encoding: .utf8) else { continue }
            do {
                try library.register(text, named: String(name.dropLast(".mustache".count)))
            } catch {
                preconditionFailure("dashboard template \(name) does not parse: \(error)")
            }
        }
        var files: [String: (String, [UInt8])] = [:]
        let folder = root.appendingPathComponent("static")
        for name in (try? FileManager.default.contentsOfDirectory(atPath: folder.path)) ?? [] {
            guard let data = try? Data(contentsOf: folder.appendingPathComponent(name)) else { continue }
            let type =
                switch (name as NSString).pathExtension {
                case "css": "text/css; charset=utf-8"
                case "js": "text/javascript; charset=utf-8"
                case "png": "image/png"
                default: "application/octet-stream"
                }
            files[name] = (type, Array(data))
        }
        return DashboardPages(library: library, staticFiles: files)
    }()

    /// Where a page belongs: Users, or one of the Settings tabs (where users look for
    /// "Settings → API Keys").
    enum Section: String {
        case users = "navUsers"
        case keys = "tabKeys"
        case rateLimits = "tabRateLimits"
        case auditLog = "tabAuditLog"
        case webhooks = "tabWebhooks"
        case members = "tabMembers"
        case ipAddresses = "tabIPs"
        case account = "tabAccount"
        case none = ""

        var isSettings: Bool { ![.users, .none].contains(self) }
    }

    /// Renders `template` inside the layout.
    func render(
        _ template: String,
        title: String,
        section: Section = .none,
        csrf: String,
        signedIn: SignedIn?,
        notice: String? = nil,
        data: [String: Any] = [:],
        status: HTTPResponse.Status = .ok
    ) -> Response {
        var values = data
        values["title"] = title
        values["csrf"] = csrf
        if let notice { values["notice"] = notice }
        if let signedIn {
            var who: [String: Any] = ["company": signedIn.account.name, "email": signedIn.member.email, "role": signedIn.member.role.label]
            if signedIn.accounts.count > 1 {
                who["switcher"] = [
                    "accounts": signedIn.accounts.map { ["id": $0.id.rawValue, "name": $0.name, "current": $0.id == signedIn.account.id] }
                ]
            }
            if section != .none { who[section.rawValue] = true }
            if section.isSettings {
                who["navSettings"] = true
                values["settingsTabs"] = [section.rawValue: true]
            }
            values["signedIn"] = who
        }
        guard let html = library.render(values, withTemplate: template) else {
            preconditionFailure("dashboard template \(template) is missing")
        }
        return Response(
            status: status,
            headers: [.contentType: "text/html; charset=utf-8"],
            body: .init(byteBuffer: ByteBuffer(string: html))
        )
    }

    func errorPage(_ page: DashboardErrorPage, context: DashboardRequestContext) -> Response {
        render(
            "error",
            title: page.title,
            csrf: context.csrfToken,
            signedIn: context.signedIn,
            data: ["heading": page.title, "message": page.message],
            status: page.status
        )
    }

    /// `2026-11-29 13:05 UTC` (with `seconds`, `13:05:09 UTC`): unambiguous for every reader.
    static func display(_ date: Date, seconds: Bool = false) -> String {
        let minutes = date.formatted(
            Date.VerbatimFormatStyle(
                format:
                    "\(year: .defaultDigits)-\(month: .twoDigits)-\(day: .twoDigits) \(hour: .twoDigits(clock: .twentyFourHour, hourCycle: .zeroBased)):\(minute: .twoDigits)",
                timeZone: .gmt,
                calendar: Calendar(identifier: .gregorian)
            )
        )
        guard seconds else { return minutes + " UTC" }
        let second = Calendar(identifier: .gregorian).dateComponents(in: .gmt, from: date).second ?? 0
        return minutes + (second < 10 ? ":0" : ":") + "\(second) UTC"
    }
}
