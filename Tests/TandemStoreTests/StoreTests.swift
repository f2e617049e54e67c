import Foundation
import Logging
import Testing
import TandemCore
import TandemTesting
@testable import TandemStore

func tempDir() -> String { makeTempDir("store") }

let lic = License(
    id: "L1", product: "P", feature: "cad", seats: 5, notAfterUSec: 0, issuedTo: ["S1", "S2"], keyId: "k",
    document: "doc\ntext", activatedUSec: 7)

@Suite struct StoreTests {
    @Test func durabilitySettingsReadBack() throws {
        let dir = tempDir()
        let store = try Store(path: dir + "/t.db", logger: Logger(label: "test"))
        #expect(try store.db.pragma("journal_mode") == "wal")
        #expect(try store.db.pragma("synchronous") == "2")  // FULL
        #expect(store.schemaVersion == Store.migrations.count)
    }

    @Test func committedStateSurvivesReopen() throws {
        let dir = tempDir()
        var expected = LicenseState()
        let changes: [Change] = [
            .serverIdSet(id: "S1"), .licenseActivated(lic),
            .leaseGranted(
                Lease(
                    id: "a", feature: "cad", client: "c", count: 2, uid: 1000, requestId: "r", acquiredUSec: 1,
                    expiresUSec: 99, ttlUSec: 98, epoch: 1)),
            .leaseGranted(
                Lease(
                    id: "b", feature: "cad", client: "d", count: 1, uid: nil, requestId: nil, acquiredUSec: 1,
                    expiresUSec: 50, ttlUSec: 49, epoch: 1)),
            .leaseRenewed(id: "a", expiresUSec: 200),
            .leaseReleased(id: "b"),
            .reservationAdded(Reservation(id: "r1", feature: "cad", holder: "h", count: 1))
        ]
        expected.apply(changes)
        expected.denied = ["cad": 3]
        do {
            let store = try Store(path: dir + "/t.db", logger: Logger(label: "test"))
            try store.commit(Array(changes.prefix(3)), epoch: 1, now: 10)
            try store.commit(Array(changes.dropFirst(3)), epoch: 1, now: 11, denied: ["cad": 3])
            #expect(store.lastSeq == UInt64(changes.count))
        }
        let reopened = try Store(path: dir + "/t.db", logger: Logger(label: "test"))
        let loaded = try reopened.load()
        #expect(loaded == expected)
        #expect(loaded.lease(forRequest: "r", client: "c")?.id == "a")
        #expect(reopened.lastSeq == UInt64(changes.count))
        let log = try reopened.changes(after: 2)
        #expect(log.map(\.seq) == Array(3...UInt64(changes.count)))
        #expect(log.map(\.change) == Array(changes.dropFirst(2)))
    }

    @Test func failedTransactionLeavesNothing() throws {
        let dir = tempDir()
        let store = try Store(path: dir + "/t.db", logger: Logger(label: "test"))
        try store.commit([.licenseActivated(lic)], epoch: 1, now: 1)
        // The second activation of the same id violates the primary key: all of the batch is rolled back.
        #expect(throws: SQLiteError.self) {
            try store.commit(
                [
                    .reservationAdded(Reservation(id: "r", feature: "cad", holder: "h", count: 1)),
                    .licenseActivated(lic)
                ], epoch: 1, now: 2)
        }
        #expect(try store.load().reservations.isEmpty)
        #expect(store.lastSeq == 1)
        #expect(try store.changes(after: 0).count == 1)
    }

    @Test func newerSchemaIsRefused() throws {
        let dir = tempDir()
        _ = try Store(path: dir + "/t.db", logger: Logger(label: "test"))
        let db = try SQLiteDatabase(path: dir + "/t.db")
        try db.exec("PRAGMA user_version=99")
        #expect(throws: SQLiteError.self) { try Store(path: dir + "/t.db", logger: Logger(label: "test")) }
    }

    /// A pair's log can be empty after its base (a pair just formed, a snapshot installed): a
    /// reopened store continues from the base, not from the empty change log. (Found by the
    /// simulation driving engines: the next append after such a restart was refused.)
    @Test func aPairLogEmptyAfterItsBaseContinuesFromTheBaseAfterReopen() throws {
        let dir = tempDir()
        var base = LicenseState()
        base.apply(.licenseActivated(lic))
        let record = PairRecord(
            node: 1, peerAddress: "10.0.0.1", peerServerId: "S1", progress: PairProgress(promisedEpoch: 3))
        do {
            let store = try Store(path: dir + "/t.db", logger: Logger(label: "test"))
            try store.formPair(record, base: LogBase(seq: 7, epoch: 3, state: base), now: 1)
            #expect(store.lastSeq == 7)
        }
        let reopened = try Store(path: dir + "/t.db", logger: Logger(label: "test"))
        #expect(reopened.lastSeq == 7)
        #expect(try reopened.pairRecord() == record)
        try reopened.append([LogEntry(seq: 8, epoch: 3, change: .epochStarted(epoch: 3))], now: 2)
        #expect(try reopened.changes(after: 7).map(\.seq) == [8])
    }
}
