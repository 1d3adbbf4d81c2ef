import Foundation
import KeywayCore
import Logging
import PostgresNIO

/// The versioned PostgreSQL schema. Never edit a shipped migration: add a new one.
enum KeywayPostgresSchema {
    /// Serialises `keyway migrate` runs across processes.
    static let migrationLock: Int64 = 0x6B65_7977_6179_0001

    static let migrations: [(id: String, sql: [String])] = [
        (
            "v1: accounts, environments, secret keys, users",
            [
                "CREATE TABLE accounts (id TEXT PRIMARY KEY, name TEXT NOT NULL, created_at BIGINT NOT NULL)",
                """
                CREATE TABLE environments (
                    account_id TEXT NOT NULL REFERENCES accounts(id) ON DELETE CASCADE,
                    name TEXT NOT NULL CHECK (name IN ('development', 'production')),
                    created_at BIGINT NOT NULL,
                    allowed_origins TEXT NOT NULL DEFAULT '',
                    PRIMARY KEY (account_id, name)
                )
                """,
                """
                CREATE TABLE secret_keys (
                    id TEXT PRIMARY KEY,
                    account_id TEXT NOT NULL,
                    environment TEXT NOT NULL,
                    digest BYTEA NOT NULL UNIQUE CHECK (length(digest) = 32),
                    hint TEXT NOT NULL,
                    created_at BIGINT NOT NULL,
                    created_by TEXT NOT NULL,
                    revoked_at BIGINT,
                    revocation_reason TEXT,
                    revocation_sequence BIGINT UNIQUE,
                    last_used_at BIGINT,
                    FOREIGN KEY (account_id, environment) REFERENCES environments(account_id, name) ON DELETE CASCADE,
                    CHECK ((revoked_at IS NULL) = (revocation_sequence IS NULL))
                )
                """,
                // The database, not only the code, allows one active key per environment.
                "CREATE UNIQUE INDEX secret_keys_one_active_per_environment ON secret_keys(account_id, environment) WHERE revoked_at IS NULL",
                "CREATE INDEX secret_keys_by_account ON secret_keys(account_id, created_at)",
                """
                CREATE TABLE users (
                    id TEXT COLLATE "C" PRIMARY KEY,
                    account_id TEXT NOT NULL,
                    environment TEXT NOT NULL,
                    username TEXT NOT NULL COLLATE "C",
                    full_name TEXT,
                    created_at BIGINT NOT NULL,
                    FOREIGN KEY (account_id, environment) REFERENCES environments(account_id, name) ON DELETE CASCADE,
                    UNIQUE (account_id, environment, username)
                )
                """,
                "CREATE INDEX users_by_environment ON users(account_id, environment, id)",
            ]
        ),
        (
            "v2: dashboard members and sessions",
            [
                """
                CREATE TABLE members (
                    id TEXT PRIMARY KEY,
                    account_id TEXT NOT NULL REFERENCES accounts(id) ON DELETE CASCADE,
                    email TEXT NOT NULL UNIQUE,
                    password_hash TEXT NOT NULL,
                    role TEXT NOT NULL,
                    created_at BIGINT NOT NULL
                )
                """,
                "CREATE INDEX members_by_account ON members(account_id)",
                """
                CREATE TABLE sessions (
                    digest BYTEA PRIMARY KEY CHECK (length(digest) = 32),
                    member_id TEXT NOT NULL REFERENCES members(id) ON DELETE CASCADE,
                    csrf_token TEXT NOT NULL,
                    created_at BIGINT NOT NULL,
                    expires_at BIGINT NOT NULL
                )
                """,
                "CREATE INDEX sessions_by_member ON sessions(member_id)",
                "CREATE INDEX sessions_by_expiry ON sessions(expires_at)",
            ]
        ),
        (
            "v3: user-token signing keys",
            [
                """
                CREATE TABLE signing_keys (
                    id TEXT PRIMARY KEY,
                    account_id TEXT NOT NULL,
                    environment TEXT NOT NULL,
                    public_key BYTEA NOT NULL,
                    sealed_private_key BYTEA NOT NULL,
                    created_at BIGINT NOT NULL,
                    retired_at BIGINT,
                    FOREIGN KEY (account_id, environment) REFERENCES environments(account_id, name) ON DELETE CASCADE
                )
                """,
                "CREATE UNIQUE INDEX signing_keys_one_active_per_environment ON signing_keys(account_id, environment) WHERE retired_at IS NULL",
                "CREATE INDEX signing_keys_by_environment ON signing_keys(account_id, environment, created_at)",
            ]
        ),
        (
            // Usernames are NFC since this version, and lookups are normalised. The oldest of
            // several spellings takes the NFC name; the others keep theirs (ids still reach them).
            "v4: usernames in NFC",
            [
                """
                UPDATE users u SET username = normalize(u.username, NFC)
                WHERE u.id IN (
                    SELECT DISTINCT ON (account_id, environment, normalize(username, NFC)) id FROM users
                    WHERE username IS NOT NFC NORMALIZED
                    ORDER BY account_id, environment, normalize(username, NFC), created_at, id
                )
                AND NOT EXISTS (
                    SELECT 1 FROM users o
                    WHERE o.account_id = u.account_id AND o.environment = u.environment AND o.username = normalize(u.username, NFC)
                )
                """
            ]
        ),
        (
            // Sign-in attempts every instance counts together; see AttemptLedger.
            "v5: shared sign-in throttle",
            [
                """
                CREATE TABLE attempt_throttle (
                    key BYTEA PRIMARY KEY CHECK (length(key) = 32),
                    attempts BIGINT[] NOT NULL,
                    touched_at BIGINT NOT NULL
                )
                """,
                "CREATE INDEX attempt_throttle_by_touch ON attempt_throttle(touched_at)",
            ]
        ),
        (
            // A preflight asks whether any environment allows an origin: one indexed row, not a
            // scan of every environment's list. The generation limit counts an environment's newest keys.
            "v6: origins indexed, key generations by environment",
            [
                """
                CREATE TABLE environment_origins (
                    account_id TEXT NOT NULL,
                    environment TEXT NOT NULL,
                    position INTEGER NOT NULL,
                    origin TEXT COLLATE "C" NOT NULL,
                    PRIMARY KEY (account_id, environment, position),
                    UNIQUE (account_id, environment, origin),
                    FOREIGN KEY (account_id, environment) REFERENCES environments(account_id, name) ON DELETE CASCADE
                )
                """,
                "CREATE INDEX environment_origins_by_origin ON environment_origins(origin)",
                """
                INSERT INTO environment_origins (account_id, environment, position, origin)
                SELECT e.account_id, e.name, o.position - 1, o.origin
                FROM environments e, unnest(string_to_array(e.allowed_origins, E'\\n')) WITH ORDINALITY AS o(origin, position)
                WHERE e.allowed_origins <> '' AND o.origin <> ''
                ON CONFLICT DO NOTHING
                """,
                "ALTER TABLE environments DROP COLUMN allowed_origins",
                "CREATE INDEX secret_keys_by_environment ON secret_keys(account_id, environment, created_at)",
            ]
        ),
        (
            // NULL is the environment's default, 0 no limit, n requests a second; the version row moves
            // with every change, so servers notice one with a single read. Instances share the requests
            // they allowed through `rate_limit_counts`: unlogged, since a crash only loses a few seconds
            // of counts that nobody needs after them.
            "v7: rate limits per environment, shared counts",
            [
                "ALTER TABLE environments ADD COLUMN requests_per_second INTEGER CHECK (requests_per_second >= 0)",
                "CREATE TABLE rate_limit_version (id INTEGER PRIMARY KEY CHECK (id = 1), version BIGINT NOT NULL)",
                "INSERT INTO rate_limit_version (id, version) VALUES (1, 0)",
                """
                CREATE UNLOGGED TABLE rate_limit_counts (
                    instance TEXT NOT NULL,
                    batch BIGINT NOT NULL,
                    account_id TEXT NOT NULL,
                    environment TEXT NOT NULL,
                    count BIGINT NOT NULL,
                    written_at BIGINT NOT NULL,
                    PRIMARY KEY (instance, batch, account_id, environment)
                )
                """,
                "CREATE INDEX rate_limit_counts_by_time ON rate_limit_counts(written_at)",
                // Every instance, idle or not, at its last exchange: how many share each limit.
                "CREATE UNLOGGED TABLE rate_limit_instances (instance TEXT PRIMARY KEY, seen_at BIGINT NOT NULL)",
            ]
        ),
        (
            // Credentials of the operator's own services; only their SHA-256 is kept.
            "v8: service tokens",
            [
                """
                CREATE TABLE service_tokens (
                    id TEXT PRIMARY KEY,
                    name TEXT NOT NULL,
                    digest BYTEA NOT NULL UNIQUE CHECK (length(digest) = 32),
                    hint TEXT NOT NULL,
                    created_at BIGINT NOT NULL,
                    revoked_at BIGINT
                )
                """,
                "CREATE UNIQUE INDEX service_tokens_one_active_per_name ON service_tokens(name) WHERE revoked_at IS NULL",
            ]
        ),
        (
            // Every change to credentials and access, inserted by the change's own transaction.
            "v9: audit log",
            [
                """
                CREATE TABLE audit_log (
                    id TEXT COLLATE "C" PRIMARY KEY,
                    at BIGINT NOT NULL,
                    account_id TEXT,
                    environment TEXT,
                    event TEXT NOT NULL,
                    actor TEXT NOT NULL,
                    resource_type TEXT,
                    resource_id TEXT,
                    resource_hint TEXT,
                    hashed_token TEXT,
                    client_address TEXT,
                    user_agent TEXT,
                    request_id TEXT,
                    details TEXT NOT NULL DEFAULT '{}'
                )
                """,
                "CREATE INDEX audit_log_by_account ON audit_log(account_id, at, id)",
                "CREATE INDEX audit_log_by_time ON audit_log(at)",
                // 1 while a rolled key's grace runs and its end is not yet in the log.
                "ALTER TABLE secret_keys ADD COLUMN grace_audit_pending BOOLEAN NOT NULL DEFAULT false",
                "CREATE INDEX secret_keys_grace_audit_pending ON secret_keys(revoked_at) WHERE grace_audit_pending",
            ]
        ),
        (
            // Endpoints and the outbox, inserted by the change's own transaction.
            "v10: webhooks",
            [
                """
                CREATE TABLE webhook_endpoints (
                    id TEXT COLLATE "C" PRIMARY KEY,
                    account_id TEXT NOT NULL,
                    environment TEXT NOT NULL,
                    url TEXT NOT NULL,
                    events TEXT NOT NULL,
                    sealed_secret BYTEA NOT NULL,
                    sealed_previous_secret BYTEA,
                    previous_secret_expires_at BIGINT,
                    created_at BIGINT NOT NULL,
                    disabled_at BIGINT,
                    disabled_reason TEXT,
                    failing_since BIGINT,
                    last_failure_at BIGINT,
                    FOREIGN KEY (account_id, environment) REFERENCES environments(account_id, name) ON DELETE CASCADE
                )
                """,
                "CREATE INDEX webhook_endpoints_by_environment ON webhook_endpoints(account_id, environment)",
                """
                CREATE TABLE webhook_deliveries (
                    id TEXT COLLATE "C" PRIMARY KEY,
                    endpoint_id TEXT NOT NULL REFERENCES webhook_endpoints(id) ON DELETE CASCADE,
                    event_type TEXT NOT NULL,
                    payload TEXT NOT NULL,
                    created_at BIGINT NOT NULL,
                    status TEXT NOT NULL CHECK (status IN ('pending', 'succeeded', 'failed')),
                    attempts INTEGER NOT NULL DEFAULT 0,
                    next_attempt_at BIGINT,
                    claim TEXT,
                    claimed_until BIGINT,
                    last_attempt_at BIGINT,
                    last_status_code INTEGER,
                    last_error TEXT
                )
                """,
                "CREATE INDEX webhook_deliveries_due ON webhook_deliveries(next_attempt_at) WHERE status = 'pending'",
                "CREATE INDEX webhook_deliveries_by_endpoint ON webhook_deliveries(endpoint_id, created_at)",
                // true while a rolled key's grace runs and its key.expiring event is not yet written.
                "ALTER TABLE secret_keys ADD COLUMN expiry_notice_pending BOOLEAN NOT NULL DEFAULT false",
                "CREATE INDEX secret_keys_expiry_notice_pending ON secret_keys(revoked_at) WHERE expiry_notice_pending",
            ]
        ),
        (
            // A person (members) may belong to several accounts (memberships), with a role in each.
            // Sessions name the account they work in; removing a membership ends them by cascade.
            // Existing sessions end here: everyone signs in again once.
            "v11: members of several accounts, roles, invitations",
            [
                """
                CREATE TABLE memberships (
                    account_id TEXT NOT NULL REFERENCES accounts(id) ON DELETE CASCADE,
                    member_id TEXT NOT NULL REFERENCES members(id) ON DELETE CASCADE,
                    role TEXT NOT NULL CHECK (role IN ('owner', 'developer', 'viewer')),
                    created_at BIGINT NOT NULL,
                    PRIMARY KEY (account_id, member_id)
                )
                """,
                "CREATE INDEX memberships_by_member ON memberships(member_id)",
                "INSERT INTO memberships (account_id, member_id, role, created_at) SELECT account_id, id, role, created_at FROM members",
                "DELETE FROM sessions",
                "ALTER TABLE sessions ADD COLUMN account_id TEXT NOT NULL",
                """
                ALTER TABLE sessions ADD FOREIGN KEY (account_id, member_id)
                    REFERENCES memberships(account_id, member_id) ON DELETE CASCADE
                """,
                "CREATE INDEX sessions_by_membership ON sessions(account_id, member_id)",
                "ALTER TABLE members DROP COLUMN account_id, DROP COLUMN role",
                "ALTER TABLE accounts ADD COLUMN developers_manage_production_keys BOOLEAN NOT NULL DEFAULT false",
                // Only the digest of a link's token is stored.
                """
                CREATE TABLE invitations (
                    id TEXT PRIMARY KEY,
                    digest BYTEA NOT NULL UNIQUE CHECK (length(digest) = 32),
                    account_id TEXT NOT NULL REFERENCES accounts(id) ON DELETE CASCADE,
                    email TEXT NOT NULL,
                    role TEXT NOT NULL CHECK (role IN ('owner', 'developer', 'viewer')),
                    invited_by TEXT NOT NULL,
                    created_at BIGINT NOT NULL,
                    expires_at BIGINT NOT NULL,
                    accepted_at BIGINT,
                    revoked_at BIGINT
                )
                """,
                "CREATE INDEX invitations_by_account ON invitations(account_id, created_at)",
            ]
        ),
        (
            "v12: two-factor sign-in",
            [
                // AES-GCM under the master key, bound to the member; never a secret in clear.
                "ALTER TABLE members ADD COLUMN totp_sealed_secret BYTEA",
                "ALTER TABLE members ADD COLUMN totp_pending_sealed_secret BYTEA",
                // The last 30-second step a code was accepted for: a code works once.
                "ALTER TABLE members ADD COLUMN totp_last_step BIGINT",
                // Only digests of recovery codes are stored.
                """
                CREATE TABLE recovery_codes (
                    member_id TEXT NOT NULL REFERENCES members(id) ON DELETE CASCADE,
                    digest BYTEA NOT NULL CHECK (length(digest) = 32),
                    used_at BIGINT,
                    PRIMARY KEY (member_id, digest)
                )
                """,
                "ALTER TABLE accounts ADD COLUMN require_two_factor BOOLEAN NOT NULL DEFAULT false",
                "ALTER TABLE sessions ADD COLUMN second_factor_pending BOOLEAN NOT NULL DEFAULT false",
            ]
        ),
        (
            "v13: wrong two-factor codes counted",
            [
                // Wrong codes at sign-in since the last right one; past 20 only a recovery code signs in.
                "ALTER TABLE members ADD COLUMN totp_failures INTEGER NOT NULL DEFAULT 0"
            ]
        ),
        (
            "v14: due deliveries by endpoint",
            [
                // A claim skips from endpoint to endpoint and reads each one's oldest due
                // deliveries: one endpoint's backlog is never scanned, nor in the others' way.
                "DROP INDEX webhook_deliveries_due",
                "CREATE INDEX webhook_deliveries_due ON webhook_deliveries(endpoint_id, next_attempt_at) WHERE status = 'pending'",
            ]
        ),
    ]

    /// Applies pending migrations in one transaction under an advisory lock, so
    /// two `keyway migrate` runs at once apply each migration exactly once.
    static func migrate(_ client: PostgresClient, logger: Logger) async throws -> [String] {
        try await client.withTransaction(logger: logger) { connection in
            try await connection.query("SELECT pg_advisory_xact_lock(\(migrationLock))", logger: logger)
            try await connection.query(
                "CREATE TABLE IF NOT EXISTS keyway_migrations (id TEXT PRIMARY KEY, applied_at BIGINT NOT NULL)",
                logger: logger
            )
            var applied: Set<String> = []
            for try await id in try await connection.query("SELECT id FROM keyway_migrations", logger: logger).decode(String.self) {
                applied.insert(id)
            }
            var done: [String] = []
            for migration in migrations where !applied.contains(migration.id) {
                for statement in migration.sql {
                    try await connection.query(PostgresQuery(unsafeSQL: statement), logger: logger)
                }
                let now = Int64(Date().timeIntervalSince1970 * 1000)
                try await connection.query("INSERT INTO keyway_migrations (id, applied_at) VALUES (\(migration.id), \(now))", logger: logger)
                done.append(migration.id)
            }
            return done
        }
    }

    /// Throws ``SchemaError`` unless every migration has been applied.
    static func requireCurrent(_ client: PostgresClient, logger: Logger) async throws {
        var applied: Set<String> = []
        do {
            for try await id in try await client.query("SELECT id FROM keyway_migrations", logger: logger).decode(String.self) {
                applied.insert(id)
            }
        } catch let error as PSQLError where error.serverInfo?[.sqlState] == "42P01" {
            throw SchemaError("The PostgreSQL database has no Keyway schema; run `keyway migrate` first.")
        }
        let known = Set(migrations.map(\.id))
        if !applied.subtracting(known).isEmpty {
            throw SchemaError("The PostgreSQL database was migrated by a newer Keyway; upgrade Keyway to use it.")
        }
        if !known.subtracting(applied).isEmpty {
            throw SchemaError("The PostgreSQL schema is out of date; run `keyway migrate` first.")
        }
    }
}
