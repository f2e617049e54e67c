import Foundation
import Logging
import TandemTesting
import Testing
import TandemCore
import TandemLicensing
import TandemStore
import TandemPair
@testable import TandemEngine

final class FakeClock: @unchecked Sendable {
    var now: USec = 1_800_000_000 * usecPerSecond
}

func makeEngine(dir: String? = nil, clock: FakeClock = FakeClock()) throws -> (Engine, String, PrivateSigningKey) {
    let d = dir ?? makeTempDir("engine")
    try FileManager.default.createDirectory(atPath: d, withIntermediateDirectories: true)
    let key = PrivateSigningKey()
    let store = try Store(path: d + "/t.db", logger: Logger(label: "test"))
    let engine = try Engine(
        store: store, settings: EngineSettings(trustedKeys: TrustedKeys([key.publicKey])),
        logger: Logger(label: "test"), clock: { clock.now })
    return (engine, d, key)
}

func activate(_ e: Engine, _ key: PrivateSigningKey, seats: UInt32 = 10) throws {
    let doc = try key.sign(
        LicenseDocument(
            id: "L1", product: "P", feature: "cad", seats: seats, notAfter: nil,
            issuedTo: [e.state.serverId], issuedAt: "2026-01-01", keyId: ""))
    _ = try e.activate(document: doc.text, caller: .root).decision.get()
    try e.flush()
}

@Suite struct EngineTests {
    @Test func answersWaitForTheCommitAndABatchIsOneTransaction() throws {
        let (e, _, key) = try makeEngine()
        try activate(e, key)
        let seqBefore = e.store.lastSeq
        var answered: [Int] = []
        for i in 0..<5 {
            let ticket = e.acquire(
                feature: "cad", count: 1, client: "c\(i)", ttlUSec: nil, requestId: nil, caller: .root)
            _ = try ticket.decision.get()
            ticket.whenAnswered { _ in answered.append(i) }
        }
        #expect(answered.isEmpty, "answers must wait for the commit")
        #expect(e.stagedCount == 5)
        try e.flush()
        #expect(answered == [0, 1, 2, 3, 4])
        #expect(e.store.lastSeq == seqBefore + 5)
        // All five entries were written together: one time stamp, consecutive sequence numbers.
        let log = try e.store.timedChanges(after: seqBefore)
        #expect(log.count == 5 && Set(log.map(\.timeUSec)).count == 1)
    }

    @Test func generatesAndKeepsAServerId() throws {
        var (e, dir, _): (Engine?, String, PrivateSigningKey) = try makeEngine()
        let id = e!.state.serverId
        #expect(id.hasPrefix("TS-") && id.count == 22)
        e = nil  // the database is locked while its engine is open
        let (again, _, _) = try makeEngine(dir: dir)
        #expect(again.state.serverId == id)
    }

    @Test func leaseTimeLimits() throws {
        let (e, _, key) = try makeEngine()
        try activate(e, key)
        #expect(
            e.acquire(feature: "cad", count: 1, client: "c", ttlUSec: 999_999, requestId: nil, caller: .root).decision
                .error?.code == .invalidArgs)
        #expect(
            e.acquire(
                feature: "cad", count: 1, client: "c", ttlUSec: e.settings.maxLeaseUSec + 1, requestId: nil,
                caller: .root
            ).decision.error?.code == .invalidArgs)
        let l = try e.acquire(feature: "cad", count: 1, client: "c", ttlUSec: nil, requestId: nil, caller: .root)
            .decision.get()
        guard case .leaseGranted(let lease, _) = l else { Issue.record("no lease"); return }
        #expect(lease.ttlUSec == e.settings.defaultLeaseUSec)
    }

    @Test func expiryIsStagedBeforeEveryDecision() throws {
        let clock = FakeClock()
        let (e, _, key) = try makeEngine(clock: clock)
        try activate(e, key, seats: 1)
        _ = try e.acquire(feature: "cad", count: 1, client: "c", ttlUSec: usecPerSecond, requestId: nil, caller: .root)
            .decision.get()
        try e.flush()
        #expect(
            e.acquire(feature: "cad", count: 1, client: "d", ttlUSec: nil, requestId: nil, caller: .root).decision
                .error?.code == .insufficientSeats)
        clock.now += usecPerSecond
        // The expired lease goes first, so the seat is free again.
        _ = try e.acquire(feature: "cad", count: 1, client: "d", ttlUSec: nil, requestId: nil, caller: .root).decision
            .get()
        var committed: [Change] = []
        e.onCommit = { committed += $0.map(\.change) }
        try e.flush()
        // (After the refusal's denial, recorded in the history.)
        let seatChanges = committed.filter { if case .acquisitionDenied = $0 { false } else { true } }
        #expect(seatChanges.first.map { if case .leaseExpired = $0 { true } else { false } } == true)
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
        let stranger = PrivateSigningKey()
        let doc = try stranger.sign(
            LicenseDocument(
                id: "X", product: "P", feature: "cad", seats: 1, notAfter: nil,
                issuedTo: [e.state.serverId], issuedAt: "2026-01-01", keyId: ""))
        #expect(e.activate(document: doc.text, caller: .root).decision.error?.code == .invalidLicense)
        #expect(
            e.activate(document: doc.text, caller: Caller(uid: 5, isAdmin: false)).decision.error?.code == .accessDenied
        )
        #expect(!e.hasStaged)
    }
}

extension Result {
    var error: Failure? { if case .failure(let e) = self { return e } else { return nil } }
}

@Suite struct PairedEnginePersistence {
    /// Without a witness, a node's split base and the lease changes cut from its log are
    /// stored with the log, in the same transaction as the cut, and read back at start.
    @Test func unmergedChangesAndTheSplitBaseAreStored() throws {
        let clock = FakeClock()
        let (e, _, _) = try makeEngine(clock: clock)
        try e.flush()
        var base = e.state
        base.apply(
            .licenseActivated(
                License(
                    id: "L", product: "P", feature: "cad", seats: 4, notAfterUSec: 0, issuedTo: [base.serverId, "TS-B"],
                    keyId: "k", document: "", activatedUSec: 1)))
        var settings = PairSettings()
        settings.partition = .split(primaryPercent: 50)
        let at = e.store.lastSeq
        e.startPair(
            PairNode(
                index: 0, baseState: base, base: at, baseEpoch: 0, log: [], promisedEpoch: 0, settings: settings,
                now: clock.now),
            peerServerId: "TS-B")
        // The peer never answers: the primary takes over alone after FailoverTimeoutSec.
        clock.now += 3_100_000
        e.tick()
        try e.flush()
        #expect(e.pair?.node.isServing(now: clock.now) == true)
        var answered: TandemError??
        let ticket = e.acquire(
            feature: "cad", count: 2, client: "c", ttlUSec: 60_000_000, requestId: nil, caller: .root)
        guard case .leaseGranted(let lease, _) = try ticket.decision.get() else {
            Issue.record("no lease")
            return
        }
        ticket.whenAnswered { answered = $0.error }
        try e.flush()
        #expect(answered == .some(nil), "answered alone, within its share (2 of 4)")
        #expect(try e.store.pairProgress().splitBase == at)
        // A leader of a newer epoch turns up with a log that lacks that grant: it is cut from
        // the log and kept, durably, until merged.
        e.pairReceive(
            from: .node(1),
            .append(
                epoch: 3, prevSeq: at, prevEpoch: 0,
                entries: [LogEntry(seq: at + 1, epoch: 3, change: .epochStarted(epoch: 3))], leaderLastSeq: at + 1))
        try e.flush()
        #expect(e.state.leases[lease.id] == nil)
        let stored = try e.store.pairProgress()
        #expect(stored.unmerged.map(\.change) == e.pair?.node.unmerged.map(\.change))
        if case .leaseGranted(let l)? = stored.unmerged.first?.change {
            #expect(l.id == lease.id)
        } else {
            Issue.record("\(stored.unmerged)")
        }
        #expect(stored.splitBase == at)
    }
}

/// Identifiers come from a buffer of the kernel's CSPRNG: all distinct, in their formats, and
/// using every hex digit in every place (no byte handed out twice, no bias from the buffer).
@Suite struct FreshIdentifiers {
    @Test func distinctWellFormedAndUniform() {
        let ids = (0..<20_000).map { _ in Identifiers.lease() }
        #expect(Set(ids).count == ids.count)
        let hex = Set("0123456789abcdef")
        #expect(ids.allSatisfy { $0.hasPrefix("lease-") && $0.count == 22 && $0.dropFirst(6).allSatisfy(hex.contains) })
        // Each of the 16 digit places sees each of the 16 digits about 1,250 times.
        for place in 6..<22 {
            var seen: [Character: Int] = [:]
            for id in ids { seen[id[id.index(id.startIndex, offsetBy: place)], default: 0] += 1 }
            #expect(seen.count == 16 && seen.values.allSatisfy { $0 > 1_000 && $0 < 1_500 }, "place \(place): \(seen)")
        }
        let sid = Identifiers.serverId()
        #expect(sid.count == 22 && sid.hasPrefix("TS-") && Set(sid.split(separator: "-").map(\.count)) == [2, 4])
    }
}
