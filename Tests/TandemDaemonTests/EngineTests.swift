import Foundation
import Logging
import Testing
import TandemCore
import TandemLicensing
import TandemStore
@testable import TandemEngine

final class FakeClock: @unchecked Sendable {
    var now: USec = 1_800_000_000 * usecPerSecond
}

func makeEngine(dir: String? = nil, clock: FakeClock = FakeClock()) throws -> (Engine, String, VendorPrivateKey) {
    let d = dir ?? NSTemporaryDirectory() + "tandem-engine-\(UUID().uuidString)"
    try FileManager.default.createDirectory(atPath: d, withIntermediateDirectories: true)
    let key = VendorPrivateKey()
    let store = try Store(path: d + "/t.db", logger: Logger(label: "test"))
    let engine = try Engine(store: store, settings: EngineSettings(trustedKeys: TrustedKeys([key.publicKey])),
                            logger: Logger(label: "test"), clock: { clock.now })
    return (engine, d, key)
}

func activate(_ e: Engine, _ key: VendorPrivateKey, seats: UInt32 = 10) throws {
    let doc = try key.sign(LicenseDocument(id: "L1", product: "P", feature: "cad", seats: seats, notAfter: nil,
                                           issuedTo: [e.state.serverId], issuedAt: "2026-01-01", keyId: ""))
    _ = try e.activate(document: doc.text, caller: .root).get()
    try e.flush()
}

@Suite struct EngineTests {
    @Test func answersWaitForTheCommitAndABatchIsOneTransaction() throws {
        let (e, _, key) = try makeEngine()
        try activate(e, key)
        let seqBefore = e.store.lastSeq
        var answered: [Int] = []
        for i in 0..<5 {
            _ = try e.acquire(feature: "cad", count: 1, client: "c\(i)", ttlUSec: nil, requestId: nil, caller: .root).get()
            e.whenCommitted { answered.append(i) }
        }
        #expect(answered.isEmpty, "answers must wait for the commit")
        #expect(e.stagedCount == 5)
        try e.flush()
        #expect(answered == [0, 1, 2, 3, 4])
        #expect(e.store.lastSeq == seqBefore + 5)
        // All five entries were written together: one time stamp, consecutive sequence numbers.
        let log = try e.store.changes(after: seqBefore)
        #expect(log.count == 5 && Set(log.map(\.timeUSec)).count == 1)
    }

    @Test func generatesAndKeepsAServerId() throws {
        var (e, dir, _): (Engine?, String, VendorPrivateKey) = try makeEngine()
        let id = e!.state.serverId
        #expect(id.hasPrefix("TS-") && id.count == 22)
        e = nil // the database is locked while its engine is open
        let (again, _, _) = try makeEngine(dir: dir)
        #expect(again.state.serverId == id)
    }

    @Test func leaseTimeLimits() throws {
        let (e, _, key) = try makeEngine()
        try activate(e, key)
        #expect(e.acquire(feature: "cad", count: 1, client: "c", ttlUSec: 999_999, requestId: nil, caller: .root).error?.code == .invalidArgs)
        #expect(e.acquire(feature: "cad", count: 1, client: "c", ttlUSec: e.settings.maxLeaseUSec + 1, requestId: nil, caller: .root).error?.code == .invalidArgs)
        let l = try e.acquire(feature: "cad", count: 1, client: "c", ttlUSec: nil, requestId: nil, caller: .root).get()
        guard case .leaseGranted(let lease, _) = l else { Issue.record("no lease"); return }
        #expect(lease.ttlUSec == e.settings.defaultLeaseUSec)
    }

    @Test func expiryIsStagedBeforeEveryDecision() throws {
        let clock = FakeClock()
        let (e, _, key) = try makeEngine(clock: clock)
        try activate(e, key, seats: 1)
        _ = try e.acquire(feature: "cad", count: 1, client: "c", ttlUSec: usecPerSecond, requestId: nil, caller: .root).get()
        try e.flush()
        #expect(e.acquire(feature: "cad", count: 1, client: "d", ttlUSec: nil, requestId: nil, caller: .root).error?.code == .insufficientSeats)
        clock.now += usecPerSecond
        // The expired lease goes first, so the seat is free again.
        _ = try e.acquire(feature: "cad", count: 1, client: "d", ttlUSec: nil, requestId: nil, caller: .root).get()
        var committed: [Change] = []
        e.onCommit = { committed += $0.map(\.change) }
        try e.flush()
        #expect(committed.first.map { if case .leaseExpired = $0 { true } else { false } } == true)
    }

    @Test func refusalsAreCountedAndPersisted() throws {
        let dir: String
        do {
            let (e, d, key) = try makeEngine()
            dir = d
            try activate(e, key, seats: 1)
            for _ in 0..<3 {
                _ = e.acquire(feature: "cad", count: 2, client: "c", ttlUSec: nil, requestId: nil, caller: .root)
            }
            #expect(e.state.denied["cad"] == 3)
            try e.persistCounters()
        }
        let (again, _, _) = try makeEngine(dir: dir)
        #expect(again.state.denied["cad"] == 3)
    }

    @Test func untrustedOrMalformedLicensesAreRefusedBeforeTheCore() throws {
        let (e, _, _) = try makeEngine()
        let stranger = VendorPrivateKey()
        let doc = try stranger.sign(LicenseDocument(id: "X", product: "P", feature: "cad", seats: 1, notAfter: nil,
                                                    issuedTo: [e.state.serverId], issuedAt: "2026-01-01", keyId: ""))
        #expect(e.activate(document: doc.text, caller: .root).error?.code == .invalidLicense)
        #expect(e.activate(document: doc.text, caller: Caller(uid: 5, isAdmin: false)).error?.code == .accessDenied)
        #expect(!e.hasStaged)
    }
}

extension Result {
    var error: Failure? { if case .failure(let e) = self { return e } else { return nil } }
}
