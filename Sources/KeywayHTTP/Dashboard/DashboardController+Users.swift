import Foundation
import HTTPTypes
import Hummingbird
import KeywayCore
import Logging
import Synchronization

// The users of an environment, searched and paged, and one user.
extension DashboardController {
    @Sendable func usersPage(_ request: Request, context: SignedInRequestContext) async throws -> Response {
        // The search is a GET form: its query is form-encoded, where `+` is a space.
        let query = HTMLForm(urlEncoded: request.uri.query ?? "")
        let environment = query["environment"].flatMap { Environment(rawValue: $0) } ?? .development
        let environmentID = EnvironmentID(accountID: context.account.id, environment: environment)
        let search = UserInput.normalized((query["q"] ?? "").trimmingCharacters(in: .whitespaces))
        let after = query["after"].flatMap { $0.isEmpty ? nil : $0 }
        let found = try await store.users(in: environmentID, usernamePrefix: search, afterUsername: after, limit: Self.pageSize + 1)
        let total = try await store.countUsers(in: environmentID, usernamePrefix: "")
        let matching = search.isEmpty ? total : try await store.countUsers(in: environmentID, usernamePrefix: search)
        let shown = Array(found.prefix(Self.pageSize))

        func link(after: String?) -> String {
            var components = URLComponents()
            components.path = "/dashboard/users"
            components.queryItems = [URLQueryItem(name: "environment", value: environment.rawValue)]
            if !search.isEmpty { components.queryItems?.append(URLQueryItem(name: "q", value: search)) }
            if let after { components.queryItems?.append(URLQueryItem(name: "after", value: after)) }
            return components.string ?? "/dashboard/users"
        }
        let noun = { (count: Int) in count == 1 ? "1 user" : "\(count) users" }
        var data: [String: Any] = [
            "environment": environment.rawValue,
            "label": environment.label,
            "query": search,
            "countText": search.isEmpty
                ? "\(noun(total)) in \(environment.rawValue)."
                : "\(noun(matching)) of \(total) in \(environment.rawValue) start with “\(search)”.",
            "switch": Environment.allCases.map { ["environment": $0.rawValue, "label": $0.label, "current": $0 == environment] },
            "hasUsers": !shown.isEmpty,
            "users": shown.map { user in
                [
                    "userId": user.id.rawValue, "username": user.username, "fullName": user.fullName ?? "—",
                    "createdAt": DashboardPages.display(user.createdAt), "environment": environment.rawValue,
                ]
            },
        ]
        if found.count > Self.pageSize, let last = shown.last { data["nextPage"] = link(after: last.username) }
        if after != nil { data["firstPage"] = link(after: nil) }
        return pages.render(
            "users",
            title: "\(environment.label) users",
            section: .users,
            csrf: context.csrfToken,
            signedIn: context.signedIn,
            data: data
        )
    }

    @Sendable func userPage(_ request: Request, context: SignedInRequestContext) async throws -> Response {
        let environment = request.uri.queryParameters["environment"].flatMap { Environment(rawValue: String($0)) } ?? .development
        guard let reference = UsersController.userReference(inPath: context.parameters.get("user") ?? "") else {
            throw DashboardErrorPage(status: .badRequest, title: "Not a user", message: "That address does not name a user.")
        }
        guard let user = try await store.user(reference, in: EnvironmentID(accountID: context.account.id, environment: environment)) else {
            throw DashboardErrorPage(status: .notFound, title: "No such user", message: "There is no user '\(reference)' in \(environment.rawValue).")
        }
        return pages.render(
            "user",
            title: user.username,
            section: .users,
            csrf: context.csrfToken,
            signedIn: context.signedIn,
            data: [
                "userId": user.id.rawValue, "username": user.username, "fullName": user.fullName ?? "—",
                "createdAt": DashboardPages.display(user.createdAt), "environment": environment.rawValue, "label": environment.label,
            ]
        )
    }
}
