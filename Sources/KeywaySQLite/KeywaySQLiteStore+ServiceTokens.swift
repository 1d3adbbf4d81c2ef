public import Foundation
import GRDB
public import KeywayCore

/// The credentials of the operator's own services.
extension KeywaySQLiteStore {
    public func insertServiceToken(_ token: ServiceTokenRecord, audit: AuditContext) async throws -> ServiceTokenRecord {
        try await database.write { db in
            // One writer at a time: the check and the insert cannot be split by another.
            guard try Bool.fetchOne(db, sql: "SELECT 1 FROM service_tokens WHERE name = ? AND revoked_at IS NULL", arguments: [token.name]) == nil
            else { throw KeywayError.serviceTokenNameTaken(token.name) }
            try db.execute(
                sql: "INSERT INTO service_tokens (id, name, digest, hint, created_at) VALUES (?, ?, ?, ?, ?)",
                arguments: [token.id.rawValue, token.name, Data(token.digest.bytes), token.hint, token.createdAt.keywayMilliseconds]
            )
            try Self.insert([.serviceToken(.serviceTokenCreated, token, at: token.createdAt, context: audit)], db: db)
        }
        return token
    }

    public func serviceToken(digest: KeyDigest) async throws -> ServiceTokenRecord? {
        try await database.read { db in
            try Row.fetchOne(db, sql: "SELECT * FROM service_tokens WHERE digest = ?", arguments: [Data(digest.bytes)])
                .map(ServiceTokenRecord.init(row:))
        }
    }

    public func serviceTokens() async throws -> [ServiceTokenRecord] {
        try await database.read { db in
            try Row.fetchAll(db, sql: "SELECT * FROM service_tokens ORDER BY created_at DESC, id").map(ServiceTokenRecord.init(row:))
        }
    }

    public func revokeServiceToken(_ reference: ServiceTokenReference, at date: Date, audit: AuditContext) async throws -> ServiceTokenRecord? {
        let (column, value) =
            switch reference {
            case .id(let id): ("id", id.rawValue)
            case .name(let name): ("name", name)
            }
        // A commit is what the `data_version` watch of every server sees: no notification to send.
        return try await database.write { db in
            let revoked = try Row.fetchOne(
                db,
                sql: """
                    UPDATE service_tokens SET revoked_at = ?
                    WHERE revoked_at IS NULL AND \(column) = ?
                    RETURNING *
                    """,
                arguments: [date.keywayMilliseconds, value]
            ).map(ServiceTokenRecord.init(row:))
            if let revoked {
                try Self.insert([.serviceToken(.serviceTokenRevoked, revoked, at: date, context: audit)], db: db)
            }
            return revoked
        }
    }
}

extension ServiceTokenRecord {
    init(row: Row) throws {
        self.init(
            id: ServiceTokenID(rawValue: row["id"]),
            name: row["name"],
            digest: try row.digest("digest"),
            hint: row["hint"],
            createdAt: Date(keywayMilliseconds: row["created_at"]),
            revokedAt: (row["revoked_at"] as Int64?).map(Date.init(keywayMilliseconds:))
        )
    }
}
