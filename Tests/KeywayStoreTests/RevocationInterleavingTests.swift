import Foundation
import KeywayCore
import Synchronization
import Testing

/// A revocation is never skipped, whatever order generations, polls and lookups
/// of several processes come in (docs/architecture.md, "Revocation").
@Suite struct RevocationInterleavingTests {
    @Test(arguments: StoreKind.allCases)
    func aRevocationElsewhereIsAppliedEvenAfterALocalGenerateNumberedAboveIt(kind: StoreKind) async throws {
        let stores = try await kind.makeSharedStores(2)
        let (serverStore, cliStore) = (stores[0], stores[1])
        let alpha = try await cliStore.createAccount(name: "Alpha", at: Date())
        let beta = try await cliStore.createAccount(name: "Beta", at: Date())
        let alphaDevelopment = EnvironmentID(accountID: alpha.id, environment: .development)
        let betaDevelopment = EnvironmentID(accountID: beta.id, environment: .development)
        let server = SecretKeys(store: serverStore)
        let cli = SecretKeys(store: cliStore)

        let alphaOld = try await cli.generate(for: alphaDevelopment, createdBy: "cli").key
        _ = try await server.generate(for: betaDevelopment, createdBy: "dashboard")
        try await server.followRevocations()  // as the server does before it listens
        _ = try await server.authenticate(Substring(alphaOld.revealPlaintext()))  // cached as active

        // The CLI revokes alpha's key (sequence n); before the server reads it, its own
        // dashboard regenerates beta's key (sequence n + 1).
        _ = try await cli.generate(for: alphaDevelopment, createdBy: "cli")
        _ = try await server.generate(for: betaDevelopment, createdBy: "dashboard")
        try await server.followRevocations()

        let error = await #expect(throws: KeywayError.self) { try await server.authenticate(Substring(alphaOld.revealPlaintext())) }
        #expect(error?.code == .revokedAPIKey)
    }

    /// Several processes over one database do random generates, polls and lookups; after
    /// every step, every key revoked before a process's last poll (or by that process
    /// itself) is refused by it, and every active key is accepted everywhere.
    @Test(arguments: StoreKind.allCases)
    func randomInterleavingsNeverLeaveARevokedKeyWorkingPastTheBound(kind: StoreKind) async throws {
        let seed = ProcessInfo.processInfo.environment["KEYWAY_TEST_SEED"].flatMap(UInt64.init) ?? UInt64.random(in: .min ... .max)
        var random = SplitMix64(seed: seed)
        let processes = 3
        let stores = try await kind.makeSharedStores(processes)
        var environments: [EnvironmentID] = []
        for name in ["Alpha", "Beta"] {
            let account = try await stores[0].createAccount(name: name, at: Date())
            environments += Environment.allCases.map { EnvironmentID(accountID: account.id, environment: $0) }
        }
        let instances = stores.map { SecretKeys(store: $0) }
        for instance in instances { try await instance.followRevocations() }

        var active: [EnvironmentID: String] = [:]
        var revokedAtStep: [String: Int] = [:]
        var revokedBy: [String: Int] = [:]
        var lastPoll = Array(repeating: 0, count: processes)
        var everyKey: [String] = []

        for step in 1...(kind == .sqlite ? 160 : 100) {
            let process = Int.random(in: 0..<processes, using: &random)
            switch Int.random(in: 0..<3, using: &random) {
            case 0:
                let environment = environments.randomElement(using: &random)!
                let key = try await instances[process].generate(for: environment, createdBy: "p\(process)").key.revealPlaintext()
                if let old = active[environment] {
                    revokedAtStep[old] = step
                    revokedBy[old] = process
                }
                active[environment] = key
                everyKey.append(key)
            case 1:
                try await instances[process].followRevocations()
                lastPoll[process] = step
            default:
                if let key = everyKey.randomElement(using: &random) {
                    _ = try? await instances[process].authenticate(Substring(key))
                }
            }

            for (index, instance) in instances.enumerated() {
                for key in everyKey {
                    let outcome: KeywayError.Code?
                    do {
                        _ = try await instance.authenticate(Substring(key))
                        outcome = nil
                    } catch let error as KeywayError {
                        outcome = error.code
                    }
                    if let revokedAt = revokedAtStep[key] {
                        guard revokedAt < lastPoll[index] || revokedBy[key] == index else { continue }
                        #expect(
                            outcome == .revokedAPIKey,
                            "seed \(seed), step \(step): process \(index) accepts a key revoked at step \(revokedAt), though it polled at step \(lastPoll[index])"
                        )
                    } else {
                        #expect(outcome == nil, "seed \(seed), step \(step): process \(index) refuses an active key")
                    }
                }
            }
        }
    }
}

/// A small seedable generator, so a failing interleaving can be replayed (`KEYWAY_TEST_SEED`).
struct SplitMix64: RandomNumberGenerator {
    private var state: UInt64

    init(seed: UInt64) { state = seed }

    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}
