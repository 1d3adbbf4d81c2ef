import Foundation
import GRDB
import GRDBSQLite
import Synchronization

/// Runs the request path's point lookups on the calling thread, through SQLite
/// connections of its own with statements prepared once.
///
/// Why not GRDB's pool for these: measured on a 2-core machine, a read through
/// the pool (checkout, a hop onto the reader's serial queue, a transaction) costs
/// tens of microseconds, ten times the indexed lookup itself, and cut the
/// throughput of `GET /users/{id}` to a third of the framework's ceiling. Here a
/// read takes an idle connection from a locked stack, steps a prepared statement
/// and resets it, which ends SQLite's implicit read transaction: a single SELECT
/// is consistent by itself, and an idle connection never pins an old WAL snapshot.
///
/// In WAL mode readers do not wait for the writer, so blocking the calling
/// thread costs only the lookup.
///
/// The connections come from the same SQLite library as GRDB's (`GRDBSQLite`,
/// the system's libsqlite3). That matters: POSIX file locks belong to the
/// process, and only one copy of SQLite can track which of its connections
/// hold them; a second copy closing a file would drop the other's locks.
final class SQLitePointReader: Sendable {
    /// The statements this reader runs; each connection prepares one lazily.
    enum Query: Int, CaseIterable {
        case secretKeyByDigest
        case userByID
        case userByUsername
        /// Changes whenever another connection (of any process) has committed.
        case dataVersion

        var sql: String {
            switch self {
            case .secretKeyByDigest:
                return """
                    SELECT id, account_id, environment, digest, hint, created_at, created_by,
                           revoked_at, revocation_reason, last_used_at
                    FROM secret_keys WHERE digest = ?1
                    """
            // Two statements rather than one `id = ? OR username = ?`: SQLite answers
            // that with two index searches and a temporary B-tree to order them,
            // which cost more than the lookup.
            case .userByID:
                return """
                    SELECT id, username, full_name, created_at FROM users
                    WHERE id = ?3 AND account_id = ?1 AND environment = ?2
                    """
            case .userByUsername:
                return """
                    SELECT id, username, full_name, created_at FROM users
                    WHERE account_id = ?1 AND environment = ?2 AND username = ?3
                    """
            case .dataVersion:
                return "PRAGMA data_version"
            }
        }
    }

    /// How long a point read waits for a busy database before it gives up (`SQLITE_BUSY`).
    static let busyTimeoutMilliseconds: Int32 = 50

    /// How much of the database file each connection maps (address space, not memory).
    static let mappedBytes = 1 << 30

    private let path: String
    private let idle = Mutex<[Connection]>([])
    /// Connections kept for reuse; more are opened under a burst and closed after it.
    private let idleLimit: Int

    init(path: String, idleLimit: Int = 16) {
        self.path = path
        self.idleLimit = idleLimit
    }

    /// Runs `query` with `bind` and decodes the first row, if any.
    func fetchOne<T>(
        _ query: Query,
        bind: (Bindings) throws -> Void,
        decode: (Columns) throws -> T
    ) throws -> T? {
        let connection = try checkOut()
        defer { checkIn(connection) }
        let statement = try connection.statement(query)
        // Resetting ends the statement's read transaction; it must not outlive this call.
        defer { sqlite3_reset(statement) }
        sqlite3_clear_bindings(statement)
        try bind(Bindings(statement: statement, connection: connection))
        switch sqlite3_step(statement) {
        case SQLITE_ROW:
            return try decode(Columns(statement: statement))
        case SQLITE_DONE:
            return nil
        case let code:
            throw connection.error(code)
        }
    }

    /// A connection of its own that tells whether anyone else committed since it last looked.
    func makeChangeWatcher() throws -> ChangeWatcher {
        ChangeWatcher(connection: try Connection(path: path))
    }

    /// Reads `PRAGMA data_version` on one connection: a read of shared memory, no
    /// disk and no lock, so it can be asked every few milliseconds.
    struct ChangeWatcher {
        fileprivate let connection: Connection
        private var lastVersion: Int64?

        fileprivate init(connection: Connection) {
            self.connection = connection
        }

        /// Whether another connection committed since the previous call (`true` on the first).
        mutating func hasChanged() throws -> Bool {
            let statement = try connection.statement(.dataVersion)
            defer { sqlite3_reset(statement) }
            let code = sqlite3_step(statement)
            guard code == SQLITE_ROW else { throw connection.error(code) }
            let version = sqlite3_column_int64(statement, 0)
            defer { lastVersion = version }
            return version != lastVersion
        }
    }

    private func checkOut() throws -> Connection {
        if let connection = idle.withLock({ $0.popLast() }) {
            return connection
        }
        return try Connection(path: path)
    }

    private func checkIn(_ connection: Connection) {
        // One not kept closes when the caller lets go of it, outside the lock.
        idle.withLock { stack in
            if stack.count < idleLimit {
                stack.append(connection)
            }
        }
    }

    /// Parameters of a prepared statement, numbered from 1 as in its SQL.
    struct Bindings {
        fileprivate let statement: OpaquePointer
        fileprivate let connection: Connection

        func bind(_ text: String, at index: Int32) throws {
            var text = text
            // With an explicit length: a NUL inside the text must not shorten what is matched.
            let code = text.withUTF8 { bytes in
                sqlite3_bind_text(statement, index, bytes.baseAddress, Int32(bytes.count), sqliteTransient)
            }
            guard code == SQLITE_OK else { throw connection.error(code) }
        }

        func bind(_ bytes: [UInt8], at index: Int32) throws {
            let code = bytes.withUnsafeBytes { buffer in
                sqlite3_bind_blob(statement, index, buffer.baseAddress, Int32(buffer.count), sqliteTransient)
            }
            guard code == SQLITE_OK else { throw connection.error(code) }
        }
    }

    /// The current row of a stepped statement, columns numbered from 0.
    struct Columns {
        fileprivate let statement: OpaquePointer

        func isNull(_ index: Int32) -> Bool {
            sqlite3_column_type(statement, index) == SQLITE_NULL
        }

        func text(_ index: Int32) -> String {
            guard let pointer = sqlite3_column_text(statement, index) else { return "" }
            let count = Int(sqlite3_column_bytes(statement, index))
            return String(decoding: UnsafeBufferPointer(start: pointer, count: count), as: UTF8.self)
        }

        func optionalText(_ index: Int32) -> String? {
            isNull(index) ? nil : text(index)
        }

        func int64(_ index: Int32) -> Int64 {
            sqlite3_column_int64(statement, index)
        }

        func optionalInt64(_ index: Int32) -> Int64? {
            isNull(index) ? nil : int64(index)
        }

        func blob(_ index: Int32) -> [UInt8] {
            let count = Int(sqlite3_column_bytes(statement, index))
            guard count > 0, let pointer = sqlite3_column_blob(statement, index) else { return [] }
            return Array(UnsafeRawBufferPointer(start: pointer, count: count))
        }
    }
}

/// `SQLITE_TRANSIENT`, which the C header defines as a cast Swift cannot import.
private let sqliteTransient = unsafeBitCast(-1, to: sqlite3_destructor_type.self)

/// One SQLite connection and its prepared statements. Used by one thread at a
/// time: the reader hands it out under a lock and takes it back afterwards.
private final class Connection: @unchecked Sendable {
    private let handle: OpaquePointer
    private var statements: [OpaquePointer?] = Array(repeating: nil, count: SQLitePointReader.Query.allCases.count)

    init(path: String) throws {
        var handle: OpaquePointer?
        // NOMUTEX: the reader already guarantees one user at a time.
        let code = sqlite3_open_v2(path, &handle, SQLITE_OPEN_READWRITE | SQLITE_OPEN_NOMUTEX, nil)
        guard code == SQLITE_OK, let handle else {
            let message = handle.map { String(cString: sqlite3_errmsg($0)) } ?? "out of memory"
            sqlite3_close_v2(handle)
            throw DatabaseError(resultCode: ResultCode(rawValue: code), message: message)
        }
        self.handle = handle
        // Wait only briefly when the database is busy (another process restarting or
        // recovering the log, holding an exclusive lock): this runs on the caller's
        // thread, an event loop's, which must not be parked for seconds. The store then
        // reads through GRDB's pool, which waits on threads of its own.
        sqlite3_busy_timeout(handle, SQLitePointReader.busyTimeoutMilliseconds)
        // Nothing written through here, ever. Pages are read through a memory map:
        // with a million users the tables outgrow a connection's page cache, and a
        // map serves them from the OS's cache without a read call and a copy each.
        let setup = "PRAGMA query_only = ON; PRAGMA mmap_size = \(SQLitePointReader.mappedBytes)"
        guard sqlite3_exec(handle, setup, nil, nil, nil) == SQLITE_OK else {
            let error = self.error(sqlite3_errcode(handle))
            sqlite3_close_v2(handle)
            throw error
        }
    }

    deinit {
        for statement in statements where statement != nil {
            sqlite3_finalize(statement)
        }
        sqlite3_close_v2(handle)
    }

    func statement(_ query: SQLitePointReader.Query) throws -> OpaquePointer {
        if let statement = statements[query.rawValue] {
            return statement
        }
        var statement: OpaquePointer?
        let code = sqlite3_prepare_v3(handle, query.sql, -1, UInt32(SQLITE_PREPARE_PERSISTENT), &statement, nil)
        guard code == SQLITE_OK, let statement else { throw error(code) }
        statements[query.rawValue] = statement
        return statement
    }

    func error(_ code: Int32) -> DatabaseError {
        DatabaseError(resultCode: ResultCode(rawValue: code), message: String(cString: sqlite3_errmsg(handle)))
    }
}
