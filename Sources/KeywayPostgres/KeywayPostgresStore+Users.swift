public import Foundation
public import KeywayCore
import Logging
import PostgresNIO

/// The users of an environment.
extension KeywayPostgresStore {
    public func createUser(_ user: NewUser, in environmentID: EnvironmentID, at date: Date) async throws -> User {
        let insertion = try await client.withConnection { connection in
            try await Self.insert(user, in: environmentID, at: date, makeUserID: makeUserID, on: connection, logger: logger)
        }
        return try insertion.created(username: user.username)
    }

    public func createUsers(_ users: [NewUser], in environmentID: EnvironmentID, at date: Date) async throws -> BatchCreation {
        try await transaction { connection in
            var result = BatchCreation()
            for user in users {
                let insertion = try await Self.insert(user, in: environmentID, at: date, makeUserID: makeUserID, on: connection, logger: logger)
                result.record(insertion, username: user.username)
            }
            return result
        }
    }

    /// Inserts a user unless its username is taken or is a user's identifier, and never with
    /// an identifier that is a username: one statement when nothing is in the way.
    ///
    /// The checks and the insert are one statement but not one lock. That suffices: to
    /// collide with a row another transaction is inserting, a username would have to
    /// guess that row's new, random identifier (64 random bits) before it is returned.
    private static func insert(
        _ user: NewUser,
        in environmentID: EnvironmentID,
        at date: Date,
        makeUserID: (Date) -> UserID,
        on connection: PostgresConnection,
        logger: Logger
    ) async throws -> UserInsertion {
        let account = environmentID.accountID.rawValue
        let environment = environmentID.environment.rawValue
        while true {
            let created = User(id: makeUserID(date), username: user.username, fullName: user.fullName, createdAt: date.keywayPrecision)
            let event = WebhookEvent.user(.userCreated, created, in: environmentID, at: created.createdAt)
            let now = Date().keywayMilliseconds
            // The user and its user.created deliveries are one statement: one commit, one round trip.
            let rows = try await connection.query(
                """
                WITH created AS (
                    INSERT INTO users (id, account_id, environment, username, full_name, created_at)
                    SELECT \(created.id.rawValue), \(account), \(environment), \(created.username), \(created.fullName),
                           \(created.createdAt.keywayMilliseconds)
                    WHERE NOT EXISTS (
                        SELECT 1 FROM users WHERE account_id = \(account) AND environment = \(environment)
                          AND (id = \(created.username) OR username = \(created.id.rawValue))
                    )
                    ON CONFLICT (account_id, environment, username) DO NOTHING
                    RETURNING id
                ), outbox AS (
                    INSERT INTO webhook_deliveries (id, endpoint_id, event_type, payload, created_at, status, attempts, next_attempt_at)
                    SELECT \(WebhookDelivery.timePrefix(created.createdAt)) || \(unescaped: Self.randomDeliveryIDPart), e.id,
                        \(event.type.rawValue), \(event.storedData), \(created.createdAt.keywayMilliseconds), 'pending', 0, \(now)
                    FROM webhook_endpoints AS e, created
                    WHERE e.account_id = \(account) AND e.environment = \(environment) AND e.disabled_at IS NULL
                      AND position(\(event.type.subscriptionKey) in e.events) > 0
                    FOR KEY SHARE OF e
                )
                SELECT id FROM created
                """,
                logger: logger
            ).decode(String.self)
            var inserted = false
            for try await _ in rows { inserted = true }
            if inserted { return .created(created) }
            // Say why; an identifier that happened to equal a username is drawn again.
            let reasons = try await connection.query(
                """
                SELECT id = \(created.username), username = \(created.username) FROM users
                WHERE account_id = \(account) AND environment = \(environment) AND (id = \(created.username) OR username = \(created.username))
                """,
                logger: logger
            ).decode((Bool, Bool).self)
            var isAUserID = false
            var taken = false
            for try await (idMatches, usernameMatches) in reasons {
                isAUserID = isAUserID || idMatches
                taken = taken || usernameMatches
            }
            if isAUserID { return .usernameIsAUserID }
            if taken { return .usernameTaken }
        }
    }

    public func user(_ reference: String, in environmentID: EnvironmentID) async throws -> User? {
        // PostgreSQL text cannot hold NUL (it refuses the query), so no user can match one.
        guard !reference.utf8.contains(0) else { return nil }
        // No username equals an identifier of its environment, so the order does not matter.
        if UserID(validating: reference) != nil, let user = try await first(UserLookup<ByID>(environmentID: environmentID, value: reference)) {
            return user
        }
        return try await first(UserLookup<ByUsername>(environmentID: environmentID, value: reference))
    }

    public func user(id: UserID, in environmentID: EnvironmentID) async throws -> User? {
        try await first(UserLookup<ByID>(environmentID: environmentID, value: id.rawValue))
    }

    public func users(in environmentID: EnvironmentID, after cursor: UserID?, limit: Int) async throws -> UserPage {
        let rows = try await all(
            """
            SELECT id, username, full_name, created_at FROM users
            WHERE account_id = \(environmentID.accountID.rawValue) AND environment = \(environmentID.environment.rawValue)
              AND id > \(cursor?.rawValue ?? "")
            ORDER BY id LIMIT \(limit + 1)
            """,
            as: UserRow.self
        )
        let users = rows.prefix(limit).map(User.init(row:))
        return UserPage(users: users, nextCursor: rows.count > limit ? users.last?.id : nil)
    }

    public func updateUser(_ id: UserID, in environmentID: EnvironmentID, with changes: UserChanges) async throws -> User? {
        let account = environmentID.accountID.rawValue
        let environment = environmentID.environment.rawValue
        // A new username may not be another user's identifier, unless the user already has it (written
        // before that rule). Checked only when the username has an identifier's shape, and inside
        // the UPDATE: a concurrent rename of this user makes PostgreSQL evaluate the condition again
        // on the row as that rename left it, so "already has it" cannot be read from a stale row.
        let guardsUsername = changes.username.map { $0 != id.rawValue && UserID(validating: $0) != nil } ?? false
        let updated: User?
        do {
            // One statement, on the row the caller's lookup found: it sets only what is given; its
            // user.updated deliveries in the same transaction.
            updated = try await transaction { connection in
                let rows = try await connection.query(
                    """
                    UPDATE users SET username = COALESCE(\(changes.username), username),
                      full_name = CASE WHEN \(changes.fullName != nil) THEN \(changes.fullName ?? nil) ELSE full_name END
                    WHERE id = \(id.rawValue) AND account_id = \(account) AND environment = \(environment)
                      AND (NOT \(guardsUsername) OR username = \(changes.username ?? "")
                        OR NOT EXISTS (
                          SELECT 1 FROM users AS other
                          WHERE other.account_id = \(account) AND other.environment = \(environment) AND other.id = \(changes.username ?? "")
                        ))
                    RETURNING id, username, full_name, created_at
                    """,
                    logger: logger
                ).decode(UserRow.self)
                var updated: User?
                for try await row in rows { updated = User(row: row) }
                if let updated {
                    try await Self.enqueue(.user(.userUpdated, updated, in: environmentID, at: Date()), connection: connection, logger: logger)
                }
                return updated
            }
        } catch let error as PSQLError where error.serverInfo?[.sqlState] == "23505" {
            throw KeywayError.usernameTaken(changes.username ?? "")
        }
        // No row: the user is gone (404), or the username was refused as another user's identifier.
        if updated == nil, guardsUsername, let username = changes.username,
            try await first(
                "SELECT 1 FROM users WHERE id = \(id.rawValue) AND account_id = \(account) AND environment = \(environment)",
                as: Int32.self
            ) != nil
        {
            throw KeywayError.usernameIsAUserID(username)
        }
        return updated
    }

    public func deleteUser(_ id: UserID, in environmentID: EnvironmentID) async throws -> Bool {
        try await transaction { connection in
            let rows = try await connection.query(
                """
                DELETE FROM users WHERE id = \(id.rawValue) AND account_id = \(environmentID.accountID.rawValue)
                  AND environment = \(environmentID.environment.rawValue)
                RETURNING id, username, full_name, created_at
                """,
                logger: logger
            ).decode(UserRow.self)
            var deleted: User?
            for try await row in rows { deleted = User(row: row) }
            guard let deleted else { return false }
            try await Self.enqueue(.user(.userDeleted, deleted, in: environmentID, at: Date()), connection: connection, logger: logger)
            return true
        }
    }

    public func users(
        in environmentID: EnvironmentID,
        usernamePrefix prefix: String,
        afterUsername username: String?,
        limit: Int
    )
        async throws -> [User]
    {
        try await all(
            """
            SELECT id, username, full_name, created_at FROM users
            WHERE account_id = \(environmentID.accountID.rawValue) AND environment = \(environmentID.environment.rawValue)
              AND username >= \(prefix) AND username < \(prefix + "\u{10FFFF}") AND username > \(username ?? "")
            ORDER BY username LIMIT \(limit)
            """,
            as: UserRow.self
        ).map(User.init(row:))
    }

    public func countUsers(in environmentID: EnvironmentID, usernamePrefix prefix: String) async throws -> Int {
        Int(
            try await first(
                """
                SELECT COUNT(*) FROM users
                WHERE account_id = \(environmentID.accountID.rawValue) AND environment = \(environmentID.environment.rawValue)
                  AND username >= \(prefix) AND username < \(prefix + "\u{10FFFF}")
                """,
                as: Int64.self
            ) ?? 0
        )
    }
}

// MARK: Prepared statements of the request path

/// A user by one of the columns that identify it in an environment. Two statements
/// rather than one `id = $3 OR username = $3`: each is a single index lookup.
private struct UserLookup<Column: UserColumn>: PostgresPreparedStatement {
    static var name: String { "keyway_user_by_\(Column.name)" }
    static var sql: String {
        "SELECT id, username, full_name, created_at FROM users WHERE account_id = $1 AND environment = $2 AND \(Column.name) = $3"
    }
    typealias Row = User

    let environmentID: EnvironmentID
    let value: String

    func makeBindings() -> PostgresBindings {
        var bindings = PostgresBindings(capacity: 3)
        bindings.append(environmentID.accountID.rawValue)
        bindings.append(environmentID.environment.rawValue)
        bindings.append(value)
        return bindings
    }

    func decodeRow(_ row: PostgresRow) throws -> User {
        User(row: try row.decode((String, String, String?, Int64).self))
    }
}

private protocol UserColumn: Sendable {
    static var name: String { get }
}

private enum ByID: UserColumn {
    static let name = "id"
}

private enum ByUsername: UserColumn {
    static let name = "username"
}
