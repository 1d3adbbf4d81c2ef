import GRDB
import KeywayCore

/// The versioned SQLite schema. Never edit a registered migration: add a new one.
enum KeywaySQLiteSchema {
    static let migrator: DatabaseMigrator = {
        var migrator = DatabaseMigrator()
        migrator.registerMigration("v1: accounts, environments, secret keys, users") { db in
            try db.execute(
                sql: """
                    CREATE TABLE accounts (
                        id TEXT PRIMARY KEY NOT NULL,
                        name TEXT NOT NULL,
                        created_at INTEGER NOT NULL
                    ) STRICT;

                    -- Every account has exactly these two; per-environment settings will live here.
                    CREATE TABLE environments (
                        account_id TEXT NOT NULL REFERENCES accounts(id) ON DELETE CASCADE,
                        name TEXT NOT NULL CHECK (name IN ('development', 'production')),
                        created_at INTEGER NOT NULL,
                        PRIMARY KEY (account_id, name)
                    ) STRICT, WITHOUT ROWID;

                    CREATE TABLE secret_keys (
                        id TEXT PRIMARY KEY NOT NULL,
                        account_id TEXT NOT NULL,
                        environment TEXT NOT NULL,
                        digest BLOB NOT NULL UNIQUE CHECK (length(digest) = 32),
                        hint TEXT NOT NULL,
                        created_at INTEGER NOT NULL,
                        created_by TEXT NOT NULL,
                        revoked_at INTEGER,
                        revocation_reason TEXT,
                        -- Orders revocations so other processes can follow them.
                        revocation_sequence INTEGER UNIQUE,
                        last_used_at INTEGER,
                        FOREIGN KEY (account_id, environment) REFERENCES environments(account_id, name) ON DELETE CASCADE,
                        CHECK ((revoked_at IS NULL) = (revocation_sequence IS NULL))
                    ) STRICT;
                    -- The schema, not only the code, allows one active key per environment.
                    CREATE UNIQUE INDEX secret_keys_one_active_per_environment
                        ON secret_keys(account_id, environment) WHERE revoked_at IS NULL;
                    CREATE INDEX secret_keys_by_account ON secret_keys(account_id, created_at);

                    CREATE TABLE users (
                        id TEXT PRIMARY KEY NOT NULL,
                        account_id TEXT NOT NULL,
                        environment TEXT NOT NULL,
                        username TEXT NOT NULL,
                        full_name TEXT,
                        created_at INTEGER NOT NULL,
                        FOREIGN KEY (account_id, environment) REFERENCES environments(account_id, name) ON DELETE CASCADE,
                        UNIQUE (account_id, environment, username)
                    ) STRICT;
                    CREATE INDEX users_by_environment ON users(account_id, environment, id);
                    """
            )
        }
        migrator.registerMigration("v2: dashboard members and sessions") { db in
            try db.execute(
                sql: """
                    CREATE TABLE members (
                        id TEXT PRIMARY KEY NOT NULL,
                        account_id TEXT NOT NULL REFERENCES accounts(id) ON DELETE CASCADE,
                        -- Lowercased by the application; members sign in with it, so it is unique everywhere.
                        email TEXT NOT NULL UNIQUE,
                        password_hash TEXT NOT NULL,
                        role TEXT NOT NULL,
                        created_at INTEGER NOT NULL
                    ) STRICT;
                    CREATE INDEX members_by_account ON members(account_id);

                    -- Only a digest of the cookie's token is stored, so a copy of the database opens no session.
                    CREATE TABLE sessions (
                        digest BLOB PRIMARY KEY NOT NULL CHECK (length(digest) = 32),
                        member_id TEXT NOT NULL REFERENCES members(id) ON DELETE CASCADE,
                        csrf_token TEXT NOT NULL,
                        created_at INTEGER NOT NULL,
                        expires_at INTEGER NOT NULL
                    ) STRICT, WITHOUT ROWID;
                    CREATE INDEX sessions_by_member ON sessions(member_id);
                    CREATE INDEX sessions_by_expiry ON sessions(expires_at);
                    """
            )
        }
        migrator.registerMigration("v3: user-token signing keys and CORS origins") { db in
            try db.execute(
                sql: """
                    CREATE TABLE signing_keys (
                        id TEXT PRIMARY KEY NOT NULL,
                        account_id TEXT NOT NULL,
                        environment TEXT NOT NULL,
                        public_key BLOB NOT NULL,
                        -- AES-GCM under the master key; never the private key in clear.
                        sealed_private_key BLOB NOT NULL,
                        created_at INTEGER NOT NULL,
                        retired_at INTEGER,
                        FOREIGN KEY (account_id, environment) REFERENCES environments(account_id, name) ON DELETE CASCADE
                    ) STRICT;
                    CREATE UNIQUE INDEX signing_keys_one_active_per_environment
                        ON signing_keys(account_id, environment) WHERE retired_at IS NULL;
                    CREATE INDEX signing_keys_by_environment ON signing_keys(account_id, environment, created_at);

                    -- Newline-separated origins allowed to call user-token endpoints from a browser.
                    ALTER TABLE environments ADD COLUMN allowed_origins TEXT NOT NULL DEFAULT '';
                    """
            )
        }
        migrator.registerMigration("v4: usernames in NFC") { db in
            // Usernames are NFC since this version, and lookups are normalised; older rows in
            // another form would be unreachable by name and shadowed by a new NFC twin. The
            // oldest of several spellings takes the NFC name; the others keep theirs (their
            // ids still reach them) rather than fail the migration.
            let rows = try Row.fetchAll(
                db,
                sql: "SELECT id, username FROM users WHERE length(CAST(username AS BLOB)) != length(username) ORDER BY created_at, id"
            )
            for row in rows {
                let username: String = row["username"]
                let normalized = UserInput.normalized(username)
                guard !normalized.utf8.elementsEqual(username.utf8) else { continue }
                try db.execute(sql: "UPDATE OR IGNORE users SET username = ? WHERE id = ?", arguments: [normalized, row["id"] as String])
            }
        }
        migrator.registerMigration("v5: origins indexed, key generations by environment") { db in
            // A preflight asks whether any environment allows an origin: one indexed row,
            // not a scan of every environment's list.
            try db.execute(
                sql: """
                    CREATE TABLE environment_origins (
                        account_id TEXT NOT NULL,
                        environment TEXT NOT NULL,
                        position INTEGER NOT NULL,
                        origin TEXT NOT NULL,
                        PRIMARY KEY (account_id, environment, position),
                        UNIQUE (account_id, environment, origin),
                        FOREIGN KEY (account_id, environment) REFERENCES environments(account_id, name) ON DELETE CASCADE
                    ) STRICT, WITHOUT ROWID;
                    CREATE INDEX environment_origins_by_origin ON environment_origins(origin);
                    -- The generation limit counts an environment's newest keys.
                    CREATE INDEX secret_keys_by_environment ON secret_keys(account_id, environment, created_at);
                    """
            )
            for row in try Row.fetchAll(db, sql: "SELECT account_id, name, allowed_origins FROM environments WHERE allowed_origins != ''") {
                let list: String = row["allowed_origins"]
                for (position, origin) in list.split(separator: "\n").enumerated() {
                    try db.execute(
                        sql: "INSERT OR IGNORE INTO environment_origins (account_id, environment, position, origin) VALUES (?, ?, ?, ?)",
                        arguments: [row["account_id"] as String, row["name"] as String, position, String(origin)]
                    )
                }
            }
            try db.execute(sql: "ALTER TABLE environments DROP COLUMN allowed_origins")
        }
        migrator.registerMigration("v6: rate limits per environment") { db in
            // NULL is the environment's default, 0 no limit, n requests a second. The version row
            // moves with every change, so a server notices one with a single read.
            try db.execute(
                sql: """
                    ALTER TABLE environments ADD COLUMN requests_per_second INTEGER CHECK (requests_per_second >= 0);
                    CREATE TABLE rate_limit_version (
                        id INTEGER PRIMARY KEY CHECK (id = 1),
                        version INTEGER NOT NULL
                    ) STRICT;
                    INSERT INTO rate_limit_version (id, version) VALUES (1, 0);
                    """
            )
        }
        migrator.registerMigration("v7: service tokens") { db in
            try db.execute(
                sql: """
                    -- Credentials of the operator's own services; only their SHA-256 is kept.
                    CREATE TABLE service_tokens (
                        id TEXT PRIMARY KEY NOT NULL,
                        name TEXT NOT NULL,
                        digest BLOB NOT NULL UNIQUE CHECK (length(digest) = 32),
                        hint TEXT NOT NULL,
                        created_at INTEGER NOT NULL,
                        revoked_at INTEGER
                    ) STRICT;
                    CREATE UNIQUE INDEX service_tokens_one_active_per_name ON service_tokens(name) WHERE revoked_at IS NULL;
                    """
            )
        }
        migrator.registerMigration("v8: audit log") { db in
            try db.execute(
                sql: """
                    -- Every change to credentials and access, inserted by the change's own transaction.
                    CREATE TABLE audit_log (
                        id TEXT PRIMARY KEY NOT NULL,
                        at INTEGER NOT NULL,
                        -- NULL for the operator's own changes (service tokens).
                        account_id TEXT,
                        environment TEXT,
                        event TEXT NOT NULL,
                        actor TEXT NOT NULL,
                        resource_type TEXT,
                        resource_id TEXT,
                        resource_hint TEXT,
                        -- SHA-256 of a key, base64: never the key.
                        hashed_token TEXT,
                        client_address TEXT,
                        user_agent TEXT,
                        request_id TEXT,
                        details TEXT NOT NULL DEFAULT '{}'
                    ) STRICT;
                    CREATE INDEX audit_log_by_account ON audit_log(account_id, at, id);
                    CREATE INDEX audit_log_by_time ON audit_log(at);
                    -- 1 while a rolled key's grace runs and its end is not yet in the log.
                    ALTER TABLE secret_keys ADD COLUMN grace_audit_pending INTEGER NOT NULL DEFAULT 0 CHECK (grace_audit_pending IN (0, 1));
                    CREATE INDEX secret_keys_grace_audit_pending ON secret_keys(revoked_at) WHERE grace_audit_pending = 1;
                    """
            )
        }
        migrator.registerMigration("v9: webhooks") { db in
            try db.execute(
                sql: """
                    CREATE TABLE webhook_endpoints (
                        id TEXT PRIMARY KEY NOT NULL,
                        account_id TEXT NOT NULL,
                        environment TEXT NOT NULL,
                        url TEXT NOT NULL,
                        -- Event types, sorted, comma-separated with a comma at each end.
                        events TEXT NOT NULL,
                        -- AES-GCM under the master key; never a secret in clear.
                        sealed_secret BLOB NOT NULL,
                        sealed_previous_secret BLOB,
                        previous_secret_expires_at INTEGER,
                        created_at INTEGER NOT NULL,
                        disabled_at INTEGER,
                        disabled_reason TEXT,
                        failing_since INTEGER,
                        last_failure_at INTEGER,
                        FOREIGN KEY (account_id, environment) REFERENCES environments(account_id, name) ON DELETE CASCADE
                    ) STRICT;
                    CREATE INDEX webhook_endpoints_by_environment ON webhook_endpoints(account_id, environment);
                    -- The outbox: one row per event and endpoint, inserted by the change's own transaction.
                    -- Clustered by endpoint and time-ordered id: an insert is two index appends (this
                    -- and the due index), and an endpoint's newest deliveries are one range.
                    CREATE TABLE webhook_deliveries (
                        endpoint_id TEXT NOT NULL REFERENCES webhook_endpoints(id) ON DELETE CASCADE,
                        id TEXT NOT NULL,
                        event_type TEXT NOT NULL,
                        payload TEXT NOT NULL,
                        created_at INTEGER NOT NULL,
                        status TEXT NOT NULL CHECK (status IN ('pending', 'succeeded', 'failed')),
                        attempts INTEGER NOT NULL DEFAULT 0,
                        next_attempt_at INTEGER,
                        claim TEXT,
                        claimed_until INTEGER,
                        last_attempt_at INTEGER,
                        last_status_code INTEGER,
                        last_error TEXT,
                        PRIMARY KEY (endpoint_id, id)
                    ) STRICT, WITHOUT ROWID;
                    CREATE INDEX webhook_deliveries_due ON webhook_deliveries(next_attempt_at) WHERE status = 'pending';
                    -- 1 while a rolled key's grace runs and its key.expiring event is not yet written.
                    ALTER TABLE secret_keys ADD COLUMN expiry_notice_pending INTEGER NOT NULL DEFAULT 0 CHECK (expiry_notice_pending IN (0, 1));
                    CREATE INDEX secret_keys_expiry_notice_pending ON secret_keys(revoked_at) WHERE expiry_notice_pending = 1;
                    """
            )
        }
        migrator.registerMigration("v10: members of several accounts, roles, invitations") { db in
            // A person (members) may belong to several accounts (memberships), with a role in each.
            // Sessions name the account they work in; removing a membership ends them by cascade.
            // Existing sessions end here: everyone signs in again once. GRDB defers foreign-key
            // checks to the end of a migration, so members can be rebuilt without its account.
            try db.execute(
                sql: """
                    CREATE TABLE memberships (
                        account_id TEXT NOT NULL REFERENCES accounts(id) ON DELETE CASCADE,
                        member_id TEXT NOT NULL REFERENCES members(id) ON DELETE CASCADE,
                        role TEXT NOT NULL CHECK (role IN ('owner', 'developer', 'viewer')),
                        created_at INTEGER NOT NULL,
                        PRIMARY KEY (account_id, member_id)
                    ) STRICT, WITHOUT ROWID;
                    CREATE INDEX memberships_by_member ON memberships(member_id);
                    INSERT INTO memberships (account_id, member_id, role, created_at)
                        SELECT account_id, id, role, created_at FROM members;
                    DROP TABLE sessions;
                    CREATE TABLE people (
                        id TEXT PRIMARY KEY NOT NULL,
                        email TEXT NOT NULL UNIQUE,
                        password_hash TEXT NOT NULL,
                        created_at INTEGER NOT NULL
                    ) STRICT;
                    INSERT INTO people (id, email, password_hash, created_at) SELECT id, email, password_hash, created_at FROM members;
                    DROP TABLE members;
                    ALTER TABLE people RENAME TO members;
                    CREATE TABLE sessions (
                        digest BLOB PRIMARY KEY NOT NULL CHECK (length(digest) = 32),
                        member_id TEXT NOT NULL,
                        account_id TEXT NOT NULL,
                        csrf_token TEXT NOT NULL,
                        created_at INTEGER NOT NULL,
                        expires_at INTEGER NOT NULL,
                        FOREIGN KEY (account_id, member_id) REFERENCES memberships(account_id, member_id) ON DELETE CASCADE
                    ) STRICT, WITHOUT ROWID;
                    CREATE INDEX sessions_by_member ON sessions(member_id);
                    CREATE INDEX sessions_by_membership ON sessions(account_id, member_id);
                    CREATE INDEX sessions_by_expiry ON sessions(expires_at);
                    ALTER TABLE accounts ADD COLUMN developers_manage_production_keys INTEGER NOT NULL DEFAULT 0
                        CHECK (developers_manage_production_keys IN (0, 1));
                    -- Only the digest of a link's token is stored.
                    CREATE TABLE invitations (
                        id TEXT PRIMARY KEY NOT NULL,
                        digest BLOB NOT NULL UNIQUE CHECK (length(digest) = 32),
                        account_id TEXT NOT NULL REFERENCES accounts(id) ON DELETE CASCADE,
                        email TEXT NOT NULL,
                        role TEXT NOT NULL CHECK (role IN ('owner', 'developer', 'viewer')),
                        invited_by TEXT NOT NULL,
                        created_at INTEGER NOT NULL,
                        expires_at INTEGER NOT NULL,
                        accepted_at INTEGER,
                        revoked_at INTEGER
                    ) STRICT;
                    CREATE INDEX invitations_by_account ON invitations(account_id, created_at);
                    """
            )
        }
        migrator.registerMigration("v11: two-factor sign-in") { db in
            try db.execute(
                sql: """
                    -- AES-GCM under the master key, bound to the member; never a secret in clear.
                    ALTER TABLE members ADD COLUMN totp_sealed_secret BLOB;
                    ALTER TABLE members ADD COLUMN totp_pending_sealed_secret BLOB;
                    -- The last 30-second step a code was accepted for: a code works once.
                    ALTER TABLE members ADD COLUMN totp_last_step INTEGER;
                    -- Only digests of recovery codes are stored.
                    CREATE TABLE recovery_codes (
                        member_id TEXT NOT NULL REFERENCES members(id) ON DELETE CASCADE,
                        digest BLOB NOT NULL CHECK (length(digest) = 32),
                        used_at INTEGER,
                        PRIMARY KEY (member_id, digest)
                    ) STRICT, WITHOUT ROWID;
                    ALTER TABLE accounts ADD COLUMN require_two_factor INTEGER NOT NULL DEFAULT 0 CHECK (require_two_factor IN (0, 1));
                    ALTER TABLE sessions ADD COLUMN second_factor_pending INTEGER NOT NULL DEFAULT 0
                        CHECK (second_factor_pending IN (0, 1));
                    """
            )
        }
        migrator.registerMigration("v12: wrong two-factor codes counted") { db in
            // Wrong codes at sign-in since the last right one; past 20 only a recovery code signs in.
            try db.execute(sql: "ALTER TABLE members ADD COLUMN totp_failures INTEGER NOT NULL DEFAULT 0")
        }
        migrator.registerMigration("v13: the outbox rebuilt: status compared, due deliveries by endpoint") { db in
            // SQLite checks `x IN (a, b, c)` by building a temporary B-tree of the list on every
            // statement: a pager opened and closed for each outbox row a user creation writes
            // (bench/webhooks). Comparisons check the same thing. A CHECK cannot be altered in
            // place, so the table is rebuilt; GRDB checks foreign keys at the migration's end.
            // The due index leads with the endpoint: a claim skips from endpoint to endpoint and
            // reads each one's oldest due deliveries, never the length of one's backlog.
            try db.execute(
                sql: """
                    CREATE TABLE webhook_deliveries_new (
                        endpoint_id TEXT NOT NULL REFERENCES webhook_endpoints(id) ON DELETE CASCADE,
                        id TEXT NOT NULL,
                        event_type TEXT NOT NULL,
                        payload TEXT NOT NULL,
                        created_at INTEGER NOT NULL,
                        status TEXT NOT NULL CHECK (status = 'pending' OR status = 'succeeded' OR status = 'failed'),
                        attempts INTEGER NOT NULL DEFAULT 0,
                        next_attempt_at INTEGER,
                        claim TEXT,
                        claimed_until INTEGER,
                        last_attempt_at INTEGER,
                        last_status_code INTEGER,
                        last_error TEXT,
                        PRIMARY KEY (endpoint_id, id)
                    ) STRICT, WITHOUT ROWID;
                    INSERT INTO webhook_deliveries_new SELECT
                        endpoint_id, id, event_type, payload, created_at, status, attempts, next_attempt_at, claim,
                        claimed_until, last_attempt_at, last_status_code, last_error
                    FROM webhook_deliveries;
                    DROP TABLE webhook_deliveries;
                    ALTER TABLE webhook_deliveries_new RENAME TO webhook_deliveries;
                    CREATE INDEX webhook_deliveries_due ON webhook_deliveries(endpoint_id, next_attempt_at) WHERE status = 'pending';
                    """
            )
        }
        return migrator
    }()

    static func requireCurrent(_ database: some DatabaseReader) throws {
        try database.read { db in
            if try migrator.hasBeenSuperseded(db) {
                throw SchemaError("The database was written by a newer Keyway; upgrade Keyway to use it.")
            }
            if try !migrator.hasCompletedMigrations(db) {
                throw SchemaError("The database schema is out of date; run `keyway migrate` first.")
            }
        }
    }
}
