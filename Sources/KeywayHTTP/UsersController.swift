import Foundation
import Hummingbird
import KeywayCore
import Logging

/// The Users API and `/whoami`. Every operation is confined to the environment
/// of the key that authenticated the request.
struct UsersController {
    typealias Context = AuthenticatedRequestContext

    let store: any KeywayStore
    let userTokens: UserTokens

    /// Most users one batch may create.
    static let batchLimit = 1000
    static let defaultPageSize = 100
    static let maximumPageSize = 1000

    var endpoints: RouteCollection<Context> {
        let routes = RouteCollection(context: Context.self)
        routes.get("whoami", use: whoami)
        routes.post("users", use: create)
        routes.post("users/batch", use: createBatch)
        routes.get("users", use: list)
        routes.get("users/:user", use: show)
        routes.put("users/:user", use: update)
        routes.delete("users/:user", use: delete)
        routes.get("users/:user/token", use: token)
        // The literal route above shadows a user named "batch"; route it back.
        routes.get("users/batch", use: show)
        routes.put("users/batch", use: update)
        routes.delete("users/batch", use: delete)
        return routes
    }

    /// `GET /whoami`: which account and environment the key belongs to.
    @Sendable func whoami(_ request: Request, context: Context) async throws -> WhoAmIResponse {
        WhoAmIResponse(
            accountId: context.key.environmentID.accountID.rawValue,
            environment: context.key.environmentID.environment.rawValue,
            keyHint: context.key.hint,
            expiresAt: context.key.expiresAt
        )
    }

    /// `POST /users`.
    @Sendable func create(_ request: Request, context: Context) async throws -> CreatedUserResponse {
        let body = try await JSONBody.decode(CreateUserRequest.self, from: request)
        let user = try await store.createUser(
            try NewUser(username: body.username, fullName: body.fullName),
            in: context.environmentID,
            at: Date()
        )
        context.logger.info("user created", metadata: ["user.id": "\(user.id)"])
        return CreatedUserResponse(userId: user.id.rawValue)
    }

    /// `POST /users/batch`: checks every entry, then creates every user whose username is free.
    ///
    /// An entry that is not a valid user is the caller's mistake, so it sinks the batch (400,
    /// nothing created); a username that is taken depends on the environment, which the caller
    /// cannot check first, so it is reported while the others are created.
    @Sendable func createBatch(_ request: Request, context: Context) async throws -> Response {
        let buffer = try await JSONBody.collect(request)
        // The users array is the body (older SDKs) or one object deep.
        guard !JSONBody.holdsArray(longerThan: Self.batchLimit, withinDepth: 2, in: buffer) else {
            throw KeywayError(.batchTooLarge, "A batch may create at most \(Self.batchLimit) users; this one has more. Split it.")
        }
        let body = try JSONBody.decode(BatchRequest.self, from: buffer)
        guard !body.users.isEmpty else {
            return try reject(.badRequest, "The batch is empty.", code: .noValidUsers, invalid: [], request, context)
        }
        var valid: [(index: Int, user: NewUser)] = []
        var malformed: [InvalidUser] = []
        for (index, entry) in body.users.enumerated() {
            do {
                valid.append((index, try entry.validated()))
            } catch let error as KeywayError {
                malformed.append(InvalidUser(index: index, username: entry.username, code: error.code.rawValue, message: error.message))
            }
        }
        guard malformed.isEmpty else {
            let message = "\(malformed.count) of the \(body.users.count) users are not valid, so none was created; see invalidUsers."
            return try reject(.badRequest, message, code: .invalidUsers, invalid: malformed, request, context)
        }
        var invalid: [InvalidUser] = []
        var seen: Set<String> = []
        var unique: [(index: Int, user: NewUser)] = []
        for (index, user) in valid {
            if seen.insert(user.username).inserted {
                unique.append((index, user))
            } else {
                invalid.append(
                    InvalidUser(
                        index: index,
                        username: user.username,
                        code: "duplicate_in_batch",
                        message: "The username appears earlier in this batch."
                    )
                )
            }
        }
        let creation = try await store.createUsers(unique.map(\.user), in: context.environmentID, at: Date())
        for (index, user) in unique {
            guard let error = creation.refused[user.username] else { continue }
            invalid.append(InvalidUser(index: index, username: user.username, code: error.code.rawValue, message: error.message))
        }
        invalid.sort { $0.index < $1.index }
        guard !creation.created.isEmpty else {
            let message = "None of the users in the batch could be created: every username is taken; see invalidUsers."
            return try reject(.conflict, message, code: .noValidUsers, invalid: invalid, request, context)
        }
        context.logger.info("users created in batch", metadata: ["users.created": "\(creation.created.count)", "users.invalid": "\(invalid.count)"])
        return try context.responseEncoder.encode(BatchResponse(message: "success", invalidUsers: invalid), from: request, context: context)
    }

    /// A batch refused whole: the error shape plus what was wrong with each user.
    private func reject(
        _ status: HTTPResponse.Status,
        _ message: String,
        code: KeywayError.Code,
        invalid: [InvalidUser],
        _ request: Request,
        _ context: Context
    ) throws -> Response {
        let rejection = BatchRejection(message: message, code: code.rawValue, requestId: context.requestID, invalidUsers: invalid)
        var response = try context.responseEncoder.encode(rejection, from: request, context: context)
        response.status = status
        return response
    }

    /// `GET /users`: a page of users in a stable order.
    @Sendable func list(_ request: Request, context: Context) async throws -> UserListResponse {
        let query = request.uri.queryParameters
        var limit = Self.defaultPageSize
        if let raw = query["limit"] {
            guard raw.utf8.allSatisfy({ (UInt8(ascii: "0")...UInt8(ascii: "9")).contains($0) }), let value = Int(raw),
                (1...Self.maximumPageSize).contains(value)
            else {
                throw KeywayError.invalidInput(field: "limit", "limit must be a whole number from 1 to \(Self.maximumPageSize).")
            }
            limit = value
        }
        var cursor: UserID?
        if let raw = query["cursor"], !raw.isEmpty {
            guard let id = UserID(validating: raw) else {
                throw KeywayError(.invalidCursor, "cursor is not one this API returned; pass nextCursor from the previous page unchanged.")
            }
            cursor = id
        }
        let page = try await store.users(in: context.environmentID, after: cursor, limit: limit)
        return UserListResponse(data: page.users.map(UserResponse.init), nextCursor: page.nextCursor?.rawValue)
    }

    /// `GET /users/{userId or username}`.
    @Sendable func show(_ request: Request, context: Context) async throws -> UserResponse {
        UserResponse(try await resolve(try reference(request, context), context: context))
    }

    /// `PUT /users/{userId or username}`.
    @Sendable func update(_ request: Request, context: Context) async throws -> UserResponse {
        let body = try await JSONBody.decode(UpdateUserRequest.self, from: request)
        guard body.username != nil || body.fullName != nil else {
            throw KeywayError.invalidInput(field: "username", "Send username, fullName or both to update a user.")
        }
        let changes = try UserChanges(username: body.username, fullName: body.fullName)
        let user = try await resolve(try reference(request, context), context: context)
        guard let updated = try await store.updateUser(user.id, in: context.environmentID, with: changes) else {
            throw KeywayError.userNotFound(user.id.rawValue, in: context.environmentID.environment, existsIn: nil)
        }
        return UserResponse(updated)
    }

    /// `DELETE /users/{userId or username}`.
    @Sendable func delete(_ request: Request, context: Context) async throws -> SuccessResponse {
        let user = try await resolve(try reference(request, context), context: context)
        guard try await store.deleteUser(user.id, in: context.environmentID) else {
            throw KeywayError.userNotFound(user.id.rawValue, in: context.environmentID.environment, existsIn: nil)
        }
        context.logger.info("user deleted", metadata: ["user.id": "\(user.id)"])
        return SuccessResponse(success: true)
    }

    /// `GET /users/{userId or username}/token`: a short-lived token for the user's frontend.
    @Sendable func token(_ request: Request, context: Context) async throws -> UserTokenResponse {
        let user = try await resolve(try reference(request, context), context: context)
        let (token, expiresAt) = try await userTokens.mint(for: user, in: context.environmentID)
        return UserTokenResponse(token: token, expiresAt: expiresAt)
    }

    /// The path's user reference, percent-decoded.
    private func reference(_ request: Request, _ context: Context) throws -> String {
        // On the literal `users/batch` routes the reference is the path's last segment.
        guard let reference = Self.userReference(inPath: context.parameters.get("user") ?? "batch") else {
            throw KeywayError.invalidInput(field: "user", "The user in the path is not a valid percent-encoded id or username.")
        }
        return reference
    }

    /// A user id or username as a path segment carries it, in the form usernames are stored;
    /// `nil` when the segment is not valid percent-encoded UTF-8 text. The API and the dashboard
    /// both read their paths with it.
    static func userReference(inPath raw: String) -> String? {
        // Most references (every user id) hold nothing to decode, and Foundation's decoding is not free.
        let decoded = raw.utf8.contains(UInt8(ascii: "%")) ? raw.removingPercentEncoding : raw
        // Text no username can hold (a control character) is left to the lookup, which finds no
        // user: the document promises a 404 for any reference but one holding U+0000, which
        // `NULRefusalMiddleware` refuses.
        guard let decoded, !decoded.isEmpty else { return nil }
        // Usernames are stored in NFC; a decomposed spelling of one names the same user.
        return UserInput.normalized(decoded)
    }

    /// Finds a user in the caller's environment, or explains why not, including
    /// that it lives in the same account's other environment.
    private func resolve(_ reference: String, context: Context) async throws -> User {
        if let user = try await store.user(reference, in: context.environmentID) {
            return user
        }
        // For identifiers only: a development key must not probe which usernames exist in production.
        var inSibling = false
        if let id = UserID(validating: reference) {
            inSibling = try await store.user(id: id, in: context.environmentID.sibling) != nil
        }
        throw KeywayError.userNotFound(
            reference,
            in: context.environmentID.environment,
            existsIn: inSibling ? context.environmentID.environment.other : nil
        )
    }
}
