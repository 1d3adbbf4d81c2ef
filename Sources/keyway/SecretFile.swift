import Foundation

#if canImport(Glibc)
import Glibc
#endif

/// Creates `path` exclusively with mode 0600, so the key is never readable by others, even briefly.
/// A new file (mode 0600) for a secret, created and given its space before the
/// secret exists, so that once there is a secret nothing is left that can fail but the write.
final class SecretFile {
    let path: String
    private let descriptor: Int32
    private var written = false

    /// Creates `path`, refusing to overwrite anything, with `capacity` bytes reserved.
    init(creating path: String, capacity: Int) throws {
        let descriptor = open(path, O_WRONLY | O_CREAT | O_EXCL, 0o600)
        guard descriptor >= 0 else {
            throw CommandError("Cannot create \(path): \(String(cString: strerror(errno))).")
        }
        // Reserve the space now: a full disk must fail here, before a key is generated.
        let reserved = posix_fallocate(descriptor, 0, off_t(capacity))
        guard reserved == 0 || reserved == EOPNOTSUPP || reserved == EINVAL else {
            close(descriptor)
            unlink(path)
            throw CommandError("Cannot reserve space in \(path): \(String(cString: strerror(reserved))).")
        }
        self.path = path
        self.descriptor = descriptor
    }

    /// Writes `contents` and syncs them to disk.
    func write(_ contents: String) throws {
        let bytes = Array(contents.utf8)
        let count = bytes.withUnsafeBytes { Glibc.write(descriptor, $0.baseAddress, $0.count) }
        guard count == bytes.count, ftruncate(descriptor, off_t(bytes.count)) == 0, fsync(descriptor) == 0 else {
            throw CommandError("Cannot write \(path): \(String(cString: strerror(errno))).")
        }
        written = true
    }

    deinit {
        close(descriptor)
        // A file nothing was written to (the generation failed) is not left behind.
        if !written { unlink(path) }
    }
}
