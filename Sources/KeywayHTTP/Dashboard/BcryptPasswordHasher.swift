import HummingbirdBcrypt
public import KeywayCore
import NIOPosix

/// bcrypt through HummingbirdBcrypt, run on NIO's thread pool so the ~75 ms
/// per call at cost 10 never blocks an event loop.
public struct BcryptPasswordHasher: PasswordHasher {
    /// bcrypt's work factor; 10 or more.
    public let cost: UInt8

    public init(cost: UInt8 = 10) {
        precondition(cost >= 10, "bcrypt cost below 10 is too weak for passwords")
        self.cost = cost
    }

    public func hash(_ password: String) async throws -> String {
        let cost = self.cost
        return try await NIOThreadPool.singleton.runIfActive { Bcrypt.hash(password, cost: cost) }
    }

    public func verify(_ password: String, hash: String) async throws -> Bool {
        try await NIOThreadPool.singleton.runIfActive { Bcrypt.verify(password, hash: hash) }
    }
}
