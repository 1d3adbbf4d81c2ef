import Foundation
import Hummingbird
import KeywayCore
import Logging

// The Users API's request and response bodies.

struct CreateUserRequest: Decodable {
    let username: String
    let fullName: String?
}

struct UpdateUserRequest: Decodable {
    let username: String?
    /// Absent: leave as is. `null`: clear it.
    let fullName: String??

    enum CodingKeys: String, CodingKey { case username, fullName }

    init(from decoder: any Decoder) throws {
        let container = try decoder.container(keyedBy: CodingKeys.self)
        // Absent leaves the username as it is; null is no username, which no user may have.
        if container.contains(.username), try container.decodeNil(forKey: .username) {
            throw KeywayError.invalidInput(field: "username", "username must be a string; leave it out to keep the current one.")
        }
        self.username = try container.decodeIfPresent(String.self, forKey: .username)
        if container.contains(.fullName) {
            self.fullName = .some(try container.decodeNil(forKey: .fullName) ? nil : container.decode(String.self, forKey: .fullName))
        } else {
            self.fullName = .none
        }
    }
}

/// `{"users": [...]}`, or a bare array as older SDKs send.
struct BatchRequest: Decodable {
    let users: [BatchEntry]

    enum CodingKeys: String, CodingKey { case users }

    init(from decoder: any Decoder) throws {
        if var array = try? decoder.unkeyedContainer() {
            var users: [BatchEntry] = []
            while !array.isAtEnd { users.append(try array.decode(BatchEntry.self)) }
            self.users = users
        } else {
            self.users = try decoder.container(keyedBy: CodingKeys.self).decode([BatchEntry].self, forKey: .users)
        }
    }
}

/// One entry of a batch. Never fails to decode, so one bad entry cannot sink the others.
struct BatchEntry: Decodable {
    let username: String?
    private let fullName: String?
    private let problem: KeywayError?

    enum CodingKeys: String, CodingKey { case username, fullName }

    init(from decoder: any Decoder) throws {
        guard let container = try? decoder.container(keyedBy: CodingKeys.self) else {
            (username, fullName, problem) = (nil, nil, .invalidInput(field: "users", "Each user must be an object with a username."))
            return
        }
        // `try?` would flatten "absent" and "wrong type" into one nil, so check each.
        var problem: KeywayError?
        do {
            self.username = try container.decodeIfPresent(String.self, forKey: .username)
        } catch {
            self.username = nil
        }
        do {
            self.fullName = try container.decodeIfPresent(String.self, forKey: .fullName)
        } catch {
            self.fullName = nil
            problem = .invalidInput(field: "fullName", "fullName must be a string or null.")
        }
        if username == nil {
            problem = .invalidInput(field: "username", "username is required and must be a string.")
        }
        self.problem = problem
    }

    func validated() throws -> NewUser {
        if let problem { throw problem }
        return try NewUser(username: username ?? "", fullName: fullName)
    }
}

struct InvalidUser: ResponseEncodable, Equatable {
    let index: Int
    let username: String?
    let code: String
    let message: String
}

/// The body of a batch refused whole (400 or 409): the error shape plus what was wrong with each user.
struct BatchRejection: Encodable {
    let message: String
    let code: String
    let requestId: String
    let invalidUsers: [InvalidUser]
}

struct BatchResponse: ResponseEncodable {
    let message: String
    let invalidUsers: [InvalidUser]
}

struct CreatedUserResponse: ResponseEncodable {
    let userId: String
}

struct UserTokenResponse: ResponseEncodable {
    let token: String
    let expiresAt: Date
}

struct SuccessResponse: ResponseEncodable {
    let success: Bool
}

struct WhoAmIResponse: Encodable, JSONWritable {
    let accountId: String
    let environment: String
    let keyHint: String
    /// When a rolled key's grace ends; absent for the environment's current key.
    let expiresAt: Date?

    func write(to writer: inout JSONWriter) {
        writer.object { object in
            object.key("accountId")
            object.string(accountId)
            object.key("environment")
            object.string(environment)
            if let expiresAt {
                object.key("expiresAt")
                object.timestamp(expiresAt)
            }
            object.key("keyHint")
            object.string(keyHint)
        }
    }
}

/// A user as the API shows it. Written by ``JSONWriter`` on the hot path; also
/// `Encodable`, for the responses that embed it through `JSONEncoder`.
struct UserResponse: Encodable, JSONWritable {
    let userId: String
    let username: String
    let fullName: String?
    let createdAt: Date

    init(_ user: User) {
        self.userId = user.id.rawValue
        self.username = user.username
        self.fullName = user.fullName
        self.createdAt = user.createdAt
    }

    func write(to writer: inout JSONWriter) {
        writer.object { object in
            object.key("createdAt")
            object.timestamp(createdAt)
            object.key("fullName")
            object.string(fullName)
            object.key("userId")
            object.string(userId)
            object.key("username")
            object.string(username)
        }
    }

    func encode(to encoder: any Encoder) throws {
        var container = encoder.container(keyedBy: CodingKeys.self)
        try container.encode(userId, forKey: .userId)
        try container.encode(username, forKey: .username)
        // null rather than absent, so clients see the field exists.
        try container.encode(fullName, forKey: .fullName)
        try container.encode(createdAt, forKey: .createdAt)
    }

    enum CodingKeys: String, CodingKey { case userId, username, fullName, createdAt }
}

struct UserListResponse: Encodable, JSONWritable {
    let data: [UserResponse]
    let nextCursor: String?

    func write(to writer: inout JSONWriter) {
        writer.object { object in
            object.key("data")
            object.array(data) { array, user in user.write(to: &array) }
            object.key("nextCursor")
            object.string(nextCursor)
        }
    }

    func encode(to encoder: any Encoder) throws {
        var container = encoder.container(keyedBy: CodingKeys.self)
        try container.encode(data, forKey: .data)
        try container.encode(nextCursor, forKey: .nextCursor)
    }

    enum CodingKeys: String, CodingKey { case data, nextCursor }
}
