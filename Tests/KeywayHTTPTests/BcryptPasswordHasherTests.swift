import KeywayHTTP
import Testing

/// The dashboard's real password hashing, which every other test replaces with a counting one.
@Suite struct BcryptPasswordHasherTests {
    @Test func passwordsAreBcryptAtCost10() async throws {
        let hasher = BcryptPasswordHasher()
        let hash = try await hasher.hash("correct horse battery")
        #expect(hash.hasPrefix("$2b$10$"), "\(hash.prefix(7))")
        #expect(try await hasher.verify("correct horse battery", hash: hash))
        #expect(try await !hasher.verify("correct horse battery!", hash: hash))
    }
}
