public import Crypto
public import Foundation
public import Logging

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// A key that signs one environment's user tokens. Its private half is stored
/// only sealed (AES-GCM) under the master key.
public struct SigningKeyRecord: Sendable, Hashable {
    /// The JWT `kid`, `sk_` followed by 20 base62 characters.
    public var id: String
    public var environmentID: EnvironmentID
    /// The P-256 public key, X9.63 (uncompressed) representation.
    public var publicKey: Data
    /// The private key sealed with AES-GCM under the master key.
    public var sealedPrivateKey: Data
    public var createdAt: Date
    /// When a newer key replaced it; it stays published while tokens it signed may live.
    public var retiredAt: Date?

    /// Builds a record as a store reads it.
    public init(id: String, environmentID: EnvironmentID, publicKey: Data, sealedPrivateKey: Data, createdAt: Date, retiredAt: Date?) {
        self.id = id
        self.environmentID = environmentID
        self.publicKey = publicKey
        self.sealedPrivateKey = sealedPrivateKey
        self.createdAt = createdAt
        self.retiredAt = retiredAt
    }
}

/// The key that seals signing keys at rest: 32 bytes, from `KEYWAY_MASTER_KEY`
/// or, on the embedded default, from a 0600 file beside the database.
public struct MasterKey: Sendable {
    let key: SymmetricKey

    /// Wraps 32 bytes.
    public init(bytes: some ContiguousBytes) throws(ConfigurationProblem) {
        let key = SymmetricKey(data: bytes)
        guard key.bitCount == 256 else { throw ConfigurationProblem("the master key must be 32 bytes") }
        self.key = key
    }

    /// Reads a base64 master key, as given in `KEYWAY_MASTER_KEY`.
    public init(base64: String) throws(ConfigurationProblem) {
        guard let data = Data(base64Encoded: base64.trimmingCharacters(in: .whitespacesAndNewlines)), data.count == 32 else {
            throw ConfigurationProblem("KEYWAY_MASTER_KEY must be 32 bytes in base64 (for example: openssl rand -base64 32)")
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
            throw ConfigurationProblem(
                "The master key file \(path) is missing, but the database holds signing keys sealed under it: restore master.key from the backup made with the database, or set KEYWAY_MASTER_KEY to the same key. A new key cannot open them."
            )
        }
        let key = SymmetricKey(size: .bits256)
        let text = key.withUnsafeBytes { Data($0) }.base64EncodedString() + "\n"
        let temporary = path + ".\(getpid()).\(UInt32.random(in: .min ... .max)).tmp"
        let descriptor = open(temporary, O_WRONLY | O_CREAT | O_EXCL, 0o600)
        guard descriptor >= 0 else { throw ConfigurationProblem("cannot create the master key file \(path)") }
        defer { unlink(temporary) }
        let bytes = Array(text.utf8)
        let written = write(descriptor, bytes, bytes.count) == bytes.count && fsync(descriptor) == 0
        close(descriptor)
        guard written else { throw ConfigurationProblem("cannot write the master key file \(path)") }
        guard link(temporary, path) == 0 else {
            // Another process created it first: use theirs.
            if errno == EEXIST, let existing = try read(path) { return existing }
            throw ConfigurationProblem("cannot create the master key file \(path)")
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
            throw ConfigurationProblem("cannot read the master key file \(path)")
        }
        do {
            return try MasterKey(base64: text)
        } catch {
            throw ConfigurationProblem("The master key file \(path) does not hold a master key (32 bytes, base64): \(error)")
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
            throw ConfigurationProblem("AES-GCM produced no combined box")
        }
        return combined
    }

    func unseal(_ sealed: Data, context: String) throws -> Data {
        try AES.GCM.open(AES.GCM.SealedBox(combined: sealed), using: key, authenticating: Data(context.utf8))
    }
}

/// A setting that cannot be used; the message says which and why.
public struct ConfigurationProblem: Error, CustomStringConvertible, Sendable {
    public let description: String
    public init(_ description: String) { self.description = description }
}
