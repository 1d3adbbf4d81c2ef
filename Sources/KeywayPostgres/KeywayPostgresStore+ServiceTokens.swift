public import Foundation
public import KeywayCore
import Logging
import PostgresNIO

/// The credentials of the operator's own services.
extension KeywayPostgresStore {
    typealias ServiceTokenRow = (String, String, Data, String, Int64, Int64?)
    static let serviceTokenColumns = "id, name, digest, hint, created_at, revoked_at"

    public func insertServiceToken(_ token: ServiceTokenRecord, audit: AuditContext) async throws -> ServiceTokenRecord {
        do {
            try await transaction { connection in
                // The partial unique index decides between racing creations of one name.
                try await connection.query(
                    """
                    INSERT INTO service_tokens (id, name, digest, hint, created_at)
                    VALUES (\(token.id.rawValue), \(token.name), \(Data(token.digest.bytes)), \(token.hint),
                            \(token.createdAt.keywayMilliseconds))
                    """,
                    logger: logger
                )
                try await Self.insert(
                    [.serviceToken(.serviceTokenCreated, token, at: token.createdAt, context: audit)],
                    connection: connection,
                    logger: logger
                )
            }
        } catch let error as PSQLError where error.serverInfo?[.sqlState] == "23505" {
            throw KeywayError.serviceTokenNameTaken(token.name)
        }
        return token
    }

    public func serviceToken(digest: KeyDigest) async throws -> ServiceTokenRecord? {
        try await first(
            "SELECT \(unescaped: Self.serviceTokenColumns) FROM service_tokens WHERE digest = \(Data(digest.bytes))",
            as: ServiceTokenRow.self
        ).map(Self.serviceToken)
    }

    public func serviceTokens() async throws -> [ServiceTokenRecord] {
        try await all(
            "SELECT \(unescaped: Self.serviceTokenColumns) FROM service_tokens ORDER BY created_at DESC, id",
            as: ServiceTokenRow.self
        ).map(Self.serviceToken)
    }

    public func revokeServiceToken(_ reference: ServiceTokenReference, at date: Date, audit: AuditContext) async throws -> ServiceTokenRecord? {
        let (id, name): (String?, String?) =
            switch reference {
            case .id(let id): (id.rawValue, nil)
            case .name(let name): (nil, name)
            }
        return try await transaction { connection in
            let rows = try await connection.query(
                """
                UPDATE service_tokens SET revoked_at = \(date.keywayMilliseconds)
                WHERE revoked_at IS NULL AND (id = \(id) OR name = \(name))
                RETURNING \(unescaped: Self.serviceTokenColumns)
                """,
                logger: logger
            ).decode(ServiceTokenRow.self)
            var revoked: ServiceTokenRecord?
            for try await row in rows { revoked = try Self.serviceToken(row) }
            // Every instance refreshes its service tokens where it follows key revocations;
            // the notification is delivered at commit, with the revocation.
            if let revoked {
                try await Self.insert(
                    [.serviceToken(.serviceTokenRevoked, revoked, at: date, context: audit)],
                    connection: connection,
                    logger: logger
                )
                try await connection.query("SELECT pg_notify(\(Self.revocationChannel), 'service-token')", logger: logger)
            }
            return revoked
        }
    }

    static func serviceToken(_ row: ServiceTokenRow) throws -> ServiceTokenRecord {
        ServiceTokenRecord(
            id: ServiceTokenID(rawValue: row.0),
            name: row.1,
            digest: try digest(row.2),
            hint: row.3,
            createdAt: Date(keywayMilliseconds: row.4),
            revokedAt: row.5.map(Date.init(keywayMilliseconds:))
        )
    }
}
