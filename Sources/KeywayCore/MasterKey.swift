public import Crypto
public import Foundation
public import Logging

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// The key that seals signing keys at rest: 32 bytes, from `KEYWAY_MASTER_KEY`
/// or, on the embedded default, from a 0600 file beside the database.
public struct MasterKey: Sendable {
    let key: SymmetricKey

    /// Wraps 32 bytes.
    public init(bytes: some ContiguousBytes) throws(ConfigurationError) {
        let key = SymmetricKey(data: bytes)
        guard key.bitCount == 256 else { throw ConfigurationError("the master key must be 32 bytes") }
        self.key = key
    }

    /// Reads a base64 master key, as given in `KEYWAY_MASTER_KEY`.
    public init(base64: String) throws(ConfigurationError) {
        guard let data = Data(base64Encoded: base64.trimmingCharacters(in: .whitespacesAndNewlines)), data.count == 32 else {
            throw ConfigurationError(variable: "KEYWAY_MASTER_KEY", message: "must be 32 bytes in base64 (for example: openssl rand -base64 32)")
        }
        try self.init(bytes: data)
    }

    /// Reads the master key file at `path`, creating it (mode 0600) with a new
    /// random key when it does not exist and `mayCreate` allows it, and says so once in the log.
    ///
    /// The file appears whole or not at all: it is written and synced under a temporary
    /// name, then linked into place, which fails if another process (a server and a CLI
    /// starting together) linked its own first; then that one is read.
    /// - Parameter mayCreate: `false` when data sealed under an existing key is stored:
    ///   a new key could never open it, so a missing file is an error, not a fresh start.
    public static func loadOrCreate(file path: String, mayCreate: Bool, logger: Logger) throws -> MasterKey {
        removeAbandonedTemporaryFiles(of: path)
        if let existing = try read(path) {
            return existing
        }
        guard mayCreate else {
            throw ConfigurationError(
                "The master key file \(path) is missing, but the database holds signing keys sealed under it: restore master.key from the backup made with the database, or set KEYWAY_MASTER_KEY to the same key. A new key cannot open them."
            )
        }
        let key = SymmetricKey(size: .bits256)
        let text = key.withUnsafeBytes { Data($0) }.base64EncodedString() + "\n"
        let temporary = path + ".\(getpid()).\(UInt32.random(in: .min ... .max)).tmp"
        let descriptor = open(temporary, O_WRONLY | O_CREAT | O_EXCL, 0o600)
        guard descriptor >= 0 else { throw ConfigurationError("cannot create the master key file \(path)") }
        defer { unlink(temporary) }
        let bytes = Array(text.utf8)
        let written = write(descriptor, bytes, bytes.count) == bytes.count && fsync(descriptor) == 0
        close(descriptor)
        guard written else { throw ConfigurationError("cannot write the master key file \(path)") }
        guard link(temporary, path) == 0 else {
            // Another process created it first: use theirs.
            if errno == EEXIST, let existing = try read(path) { return existing }
            throw ConfigurationError("cannot create the master key file \(path)")
        }
        syncFolder(of: path)
        logger.warning(
            "no KEYWAY_MASTER_KEY configured: created a master key file beside the database; back it up with the database, or set KEYWAY_MASTER_KEY",
            metadata: ["master_key.path": "\(path)"]
        )
        return try MasterKey(base64: text)
    }

    private static func read(_ path: String) throws -> MasterKey? {
        guard FileManager.default.fileExists(atPath: path) else { return nil }
        let text: String
        do {
            text = try String(contentsOfFile: path, encoding: .utf8)
        } catch {
            throw ConfigurationError("cannot read the master key file \(path)")
        }
        do {
            return try MasterKey(base64: text)
        } catch {
            throw ConfigurationError("The master key file \(path) does not hold a master key (32 bytes, base64).")
        }
    }

    /// Deletes temporary key files that a process killed while creating the key left
    /// behind (they hold a key, mode 0600). Only old ones: a young one may be another
    /// process's, about to be linked.
    private static func removeAbandonedTemporaryFiles(of path: String) {
        let url = URL(fileURLWithPath: path)
        let folder = url.deletingLastPathComponent()
        let prefix = url.lastPathComponent + "."
        guard let names = try? FileManager.default.contentsOfDirectory(atPath: folder.path) else { return }
        for name in names where name.hasPrefix(prefix) && name.hasSuffix(".tmp") {
            let candidate = folder.appendingPathComponent(name).path
            guard let modified = (try? FileManager.default.attributesOfItem(atPath: candidate))?[.modificationDate] as? Date,
                Date().timeIntervalSince(modified) > 60
            else { continue }
            unlink(candidate)
        }
    }

    /// Makes a new directory entry durable.
    private static func syncFolder(of path: String) {
        let folder = open(URL(fileURLWithPath: path).deletingLastPathComponent().path, O_RDONLY)
        guard folder >= 0 else { return }
        fsync(folder)
        close(folder)
    }

    func seal(_ plaintext: Data, context: String) throws -> Data {
        guard let combined = try AES.GCM.seal(plaintext, using: key, authenticating: Data(context.utf8)).combined else {
            throw ConfigurationError("AES-GCM produced no combined box")
        }
        return combined
    }

    /// HMAC-SHA256 of `data` under a key derived (HKDF) from the master key for `context`: a
    /// digest nobody without the master key can compute, so a copy of the database alone
    /// cannot be searched for what produced it.
    func authenticationCode(for data: some DataProtocol, context: String) -> [UInt8] {
        let derived = HKDF<SHA256>.deriveKey(inputKeyMaterial: key, info: Data(context.utf8), outputByteCount: 32)
        return Array(HMAC<SHA256>.authenticationCode(for: data, using: derived))
    }

    func unseal(_ sealed: Data, context: String) throws -> Data {
        try AES.GCM.open(AES.GCM.SealedBox(combined: sealed), using: key, authenticating: Data(context.utf8))
    }
}

extension MasterKey {
    /// The master key a deployment seals signing keys under: the policy every command follows.
    ///
    /// - A configured key (`KEYWAY_MASTER_KEY`) is always used.
    /// - Instances sharing a database (PostgreSQL) must all seal with the same key, so there
    ///   it is required: a key file on one machine would make tokens another cannot sign.
    /// - On the embedded default, the file `master.key` beside the database is read, and
    ///   created only while nothing is sealed yet: a lost file must not pass for a first start.
    /// - Parameters:
    ///   - configured: `KEYWAY_MASTER_KEY`, already read.
    ///   - sharedDatabase: Whether several instances may use the database (PostgreSQL).
    ///   - databasePath: The SQLite file, beside which the key file lives.
    ///   - store: Asked whether anything is sealed yet.
    /// - Throws: ``ConfigurationError`` saying what to set or restore.
    public static func forDeployment(
        configured: MasterKey?,
        sharedDatabase: Bool,
        databasePath: String,
        store: any SigningKeyStore,
        logger: Logger
    ) async throws -> MasterKey {
        if let configured { return configured }
        guard !sharedDatabase else {
            throw ConfigurationError(
                variable: "KEYWAY_MASTER_KEY",
                message: "is required with KEYWAY_DATABASE_URL, the same on every instance (generate one with: openssl rand -base64 32)."
            )
        }
        let folder = URL(fileURLWithPath: databasePath).deletingLastPathComponent()
        return try loadOrCreate(
            file: folder.appendingPathComponent("master.key").path,
            mayCreate: !(try await store.hasSigningKeys()),
            logger: logger
        )
    }
}
