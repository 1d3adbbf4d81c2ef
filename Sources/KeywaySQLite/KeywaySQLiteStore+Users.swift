public import Foundation
import GRDB
public import KeywayCore
import Synchronization

/// The users of an environment.
extension KeywaySQLiteStore {
    public func createUser(_ user: NewUser, in environmentID: EnvironmentID, at date: Date) async throws -> User {
        // The identifier and the user.created body are made here, in parallel with other requests,
        // not in the one writer that commits them; the writer redoes them only on a collision.
        let created = User(id: makeUserID(date), username: user.username, fullName: user.fullName, createdAt: date.keywayPrecision)
        let event = WebhookEvent.user(.userCreated, created, in: environmentID, at: created.createdAt)
        let creation = UserCreation(user: user, environmentID: environmentID, date: date, drawn: (created.id, event.storedData))
        return try await userCreations.submit(creation).created(username: user.username)
    }

    public func createUsers(_ users: [NewUser], in environmentID: EnvironmentID, at date: Date) async throws -> BatchCreation {
        try await database.write { db in
            var result = BatchCreation()
            for user in users {
                result.record(try Self.insert(user, in: environmentID, at: date, makeUserID: makeUserID, db: db), username: user.username)
            }
            return result
        }
    }

    struct UserCreation: Sendable {
        let user: NewUser
        let environmentID: EnvironmentID
        let date: Date
        /// An identifier drawn before the writer took the creation, and its event's stored data.
        var drawn: (id: UserID, storedData: String)?
    }

    /// Inserts a user unless its username is taken or is a user's identifier, and never
    /// with an identifier that is a username. SQLite runs one writer at a time, so
    /// nothing can come between these checks and the insert.
    static func insert(
        _ user: NewUser,
        in environmentID: EnvironmentID,
        at date: Date,
        makeUserID: (Date) -> UserID,
        drawn: (id: UserID, storedData: String)? = nil,
        db: Database
    ) throws -> UserInsertion {
        if try isUserID(user.username, in: environmentID, db: db) {
            return .usernameIsAUserID
        }
        var id = drawn?.id ?? makeUserID(date)
        while try Bool.fetchOne(
            db,
            sql: "SELECT 1 FROM users WHERE account_id = ? AND environment = ? AND username = ?",
            arguments: [environmentID.accountID.rawValue, environmentID.environment.rawValue, id.rawValue]
        ) != nil {
            id = makeUserID(date)
        }
        let created = User(id: id, username: user.username, fullName: user.fullName, createdAt: date.keywayPrecision)
        try db.execute(
            sql: """
                INSERT INTO users (id, account_id, environment, username, full_name, created_at)
                VALUES (?, ?, ?, ?, ?, ?)
                ON CONFLICT (account_id, environment, username) DO NOTHING
                """,
            arguments: [
                created.id.rawValue, environmentID.accountID.rawValue, environmentID.environment.rawValue,
                created.username, created.fullName, created.createdAt.keywayMilliseconds,
            ]
        )
        guard db.changesCount == 1 else { return .usernameTaken }
        let event = WebhookEvent.user(.userCreated, created, in: environmentID, at: created.createdAt)
        // The data drawn beforehand, unless the identifier had to be drawn again.
        try enqueue(event, storedData: drawn.flatMap { $0.id == id ? $0.storedData : nil }, db: db)
        return .created(created)
    }

    /// Whether `username` is the identifier of a user of the environment.
    private static func isUserID(_ username: String, in environmentID: EnvironmentID, db: Database) throws -> Bool {
        guard UserID(validating: username) != nil else { return false }
        return try Bool.fetchOne(
            db,
            sql: "SELECT 1 FROM users WHERE account_id = ? AND environment = ? AND id = ?",
            arguments: [environmentID.accountID.rawValue, environmentID.environment.rawValue, username]
        ) != nil
    }

    public func user(_ reference: String, in environmentID: EnvironmentID) async throws -> User? {
        // The API's hottest read: run here, on a connection of the point reader.
        // No username equals an identifier of its environment, so the order does not matter.
        if UserID(validating: reference) != nil, let user = try await user(.userByID, reference, in: environmentID) {
            return user
        }
        return try await user(.userByUsername, reference, in: environmentID)
    }

    public func user(id: UserID, in environmentID: EnvironmentID) async throws -> User? {
        try await user(.userByID, id.rawValue, in: environmentID)
    }

    private func user(_ query: SQLitePointReader.Query, _ reference: String, in environmentID: EnvironmentID) async throws -> User? {
        do {
            return try pointReader.fetchOne(query) { bindings in
                try bindings.bind(environmentID.accountID.rawValue, at: 1)
                try bindings.bind(environmentID.environment.rawValue, at: 2)
                try bindings.bind(reference, at: 3)
            } decode: { columns in
                User(
                    id: UserID(rawValue: columns.text(0)),
                    username: columns.text(1),
                    fullName: columns.optionalText(2),
                    createdAt: Date(keywayMilliseconds: columns.int64(3))
                )
            }
        } catch let error as DatabaseError where error.resultCode == .SQLITE_BUSY {
            pointReadFallbacks.add(1, ordering: .relaxed)
            return try await database.read { db in
                try Row.fetchOne(
                    db,
                    sql: query.sql,
                    arguments: [environmentID.accountID.rawValue, environmentID.environment.rawValue, reference]
                ).map(User.init(row:))
            }
        }
    }

    public func users(in environmentID: EnvironmentID, after cursor: UserID?, limit: Int) async throws -> UserPage {
        try await database.read { db in
            let rows = try Row.fetchAll(
                db,
                sql: """
                    SELECT id, username, full_name, created_at FROM users
                    WHERE account_id = ? AND environment = ? AND id > ?
                    ORDER BY id LIMIT ?
                    """,
                arguments: [environmentID.accountID.rawValue, environmentID.environment.rawValue, cursor?.rawValue ?? "", limit + 1]
            )
            let users = rows.prefix(limit).map(User.init(row:))
            return UserPage(users: users, nextCursor: rows.count > limit ? users.last?.id : nil)
        }
    }

    public func updateUser(_ id: UserID, in environmentID: EnvironmentID, with changes: UserChanges) async throws -> User? {
        try await database.write { db in
            if let username = changes.username, try Self.isAnotherUsersID(username, renaming: id, in: environmentID, db: db) {
                throw KeywayError.usernameIsAUserID(username)
            }
            do {
                // One statement, on the row the caller's lookup found: it sets only what is given.
                let updated = try Row.fetchOne(
                    db,
                    sql: """
                        UPDATE users SET username = COALESCE(?, username), full_name = CASE WHEN ? THEN ? ELSE full_name END
                        WHERE id = ? AND account_id = ? AND environment = ?
                        RETURNING id, username, full_name, created_at
                        """,
                    arguments: [
                        changes.username, changes.fullName != nil, changes.fullName ?? nil, id.rawValue, environmentID.accountID.rawValue,
                        environmentID.environment.rawValue,
                    ]
                ).map(User.init(row:))
                if let updated { try Self.enqueue(.user(.userUpdated, updated, in: environmentID, at: Date()), db: db) }
                return updated
            } catch let error as DatabaseError where error.extendedResultCode == .SQLITE_CONSTRAINT_UNIQUE {
                throw KeywayError.usernameTaken(changes.username ?? "")
            }
        }
    }

    /// Whether renaming user `id` to `username` would give it another user's identifier as
    /// username. A username the user already has (written before that rule) is left as it is,
    /// and a user not in the environment is not found by the update. Reads only when `username`
    /// has the shape of an identifier.
    private static func isAnotherUsersID(_ username: String, renaming id: UserID, in environmentID: EnvironmentID, db: Database) throws -> Bool {
        guard username != id.rawValue, UserID(validating: username) != nil else { return false }
        return try Bool.fetchOne(
            db,
            sql: """
                SELECT 1 FROM users AS renamed
                WHERE renamed.id = ? AND renamed.account_id = ? AND renamed.environment = ? AND renamed.username <> ?
                  AND EXISTS (
                    SELECT 1 FROM users AS other
                    WHERE other.account_id = renamed.account_id AND other.environment = renamed.environment AND other.id = ?
                  )
                """,
            arguments: [id.rawValue, environmentID.accountID.rawValue, environmentID.environment.rawValue, username, username]
        ) != nil
    }

    public func deleteUser(_ id: UserID, in environmentID: EnvironmentID) async throws -> Bool {
        try await database.write { db in
            let deleted = try Row.fetchOne(
                db,
                sql: "DELETE FROM users WHERE id = ? AND account_id = ? AND environment = ? RETURNING id, username, full_name, created_at",
                arguments: [id.rawValue, environmentID.accountID.rawValue, environmentID.environment.rawValue]
            ).map(User.init(row:))
            guard let deleted else { return false }
            try Self.enqueue(.user(.userDeleted, deleted, in: environmentID, at: Date()), db: db)
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
        try await database.read { db in
            try Row.fetchAll(
                db,
                sql: """
                    SELECT id, username, full_name, created_at FROM users
                    WHERE account_id = ? AND environment = ? AND username >= ? AND username < ? AND username > ?
                    ORDER BY username LIMIT ?
                    """,
                arguments: [
                    environmentID.accountID.rawValue, environmentID.environment.rawValue, prefix, Self.upperBound(prefix), username ?? "",
                    limit,
                ]
            ).map(User.init(row:))
        }
    }

    public func countUsers(in environmentID: EnvironmentID, usernamePrefix prefix: String) async throws -> Int {
        try await database.read { db in
            try Int.fetchOne(
                db,
                sql: "SELECT COUNT(*) FROM users WHERE account_id = ? AND environment = ? AND username >= ? AND username < ?",
                arguments: [environmentID.accountID.rawValue, environmentID.environment.rawValue, prefix, Self.upperBound(prefix)]
            ) ?? 0
        }
    }

    /// The smallest string greater than every string starting with `prefix`,
    /// so a prefix search is a range on the username index.
    private static func upperBound(_ prefix: String) -> String {
        prefix + "\u{10FFFF}"
    }
}
