/// Hashes and checks dashboard passwords. A protocol so that Core does not
/// depend on bcrypt, and tests can count calls and avoid its deliberate cost.
/// KeywayHTTP's `BcryptPasswordHasher` is the real one.
public protocol PasswordHasher: Sendable {
    /// A new salted hash of `password`, to store.
    /// - Throws: When the hasher cannot run (its thread pool is shut down).
    func hash(_ password: String) async throws -> String
    /// Whether `password` is the one `hash` was made from.
    /// - Throws: When the hasher cannot run (its thread pool is shut down).
    func verify(_ password: String, hash: String) async throws -> Bool
}
