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
        // The history names the feature of each lease a write ended, for the metrics.
        try reopened.commit([.leaseReleased(id: "a")], epoch: 1, now: 12)
        #expect(reopened.endedLeaseFeatures == ["a": "cad"])
        try reopened.commit([.leaseRenewed(id: "nothing ended", expiresUSec: 1)], epoch: 1, now: 13)
        #expect(reopened.endedLeaseFeatures.isEmpty)
    }

    /// The log's payloads are the changes' binary form; a row an older version wrote in JSON is
    /// read beside them, and a payload that is neither is an error, not a guess.
    @Test func logPayloadsAreBinaryAndOlderJSONRowsStillRead() throws {
        let dir = tempDir()
        let granted = Change.leaseGranted(
            Lease(
                id: "a", feature: "cad", client: "c", count: 2, uid: 1000, requestId: "r", acquiredUSec: 1,
                expiresUSec: 99, ttlUSec: 98, epoch: 1))
        let store = try Store(path: dir + "/t.db", logger: Logger(label: "test"))
        try store.commit([.licenseActivated(lic), granted], epoch: 1, now: 10)
        #expect(try store.db.query("SELECT typeof(payload) FROM change_log").map { $0[0].text } == ["blob", "blob"])
        // As version 6 wrote it: JSON text.
        let json = String(
            decoding: try JSONEncoder().encode(Change.leaseRenewed(id: "a", expiresUSec: 300)), as: UTF8.self)
        try store.db.run(
            "INSERT INTO change_log VALUES (3, 1, 11, 'leaseRenewed', ?)", .text(json))
        #expect(
            try store.changes(after: 0).map(\.change) == [
                .licenseActivated(lic), granted, .leaseRenewed(id: "a", expiresUSec: 300)
            ])
        try store.db.run("INSERT INTO change_log VALUES (4, 1, 12, 'leaseReleased', ?)", .blob([6]))
        #expect(throws: WireError.self) { try store.changes(after: 3) }
    }

    @Test func failedTransactionLeavesNothing() throws {
        let dir = tempDir()
        let store = try Store(path: dir + "/t.db", logger: Logger(label: "test"))
        try store.commit([.licenseActivated(lic)], epoch: 1, now: 1)
        // The batch's second entry is refused (a trigger standing in for a full disk): all of the
        // batch is rolled back.
        try store.db.exec(
            "CREATE TRIGGER refuse BEFORE INSERT ON change_log WHEN NEW.seq = 3 BEGIN SELECT RAISE(ABORT, 'full'); END")
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

    func lease(_ id: String, expires: USec = 99, token: String? = nil) -> Lease {
        Lease(
            id: id, feature: "cad", client: "c", count: 1, uid: nil, token: token, requestId: nil, acquiredUSec: 1,
            expiresUSec: expires, ttlUSec: 98, epoch: 1)
    }

    func count(_ store: Store, _ table: String) throws -> Int64 {
        try store.db.query("SELECT COUNT(*) FROM \(table)").first?.first?.int ?? -1
    }

    /// One truth on disk: a commit appends to the log only; the tables hold the state at the
    /// log's base, and compaction folds the oldest entries into them, keeping `compactKeep`.
    @Test func aStandaloneLogIsFoldedIntoTheTablesKeepingTheLatestEntries() throws {
        let dir = tempDir()
        var expected = LicenseState()
        do {
            let store = try Store(path: dir + "/t.db", logger: Logger(label: "test"))
            store.compactKeep = 3
            try store.commit([.serverIdSet(id: "S1"), .licenseActivated(lic)], epoch: 1, now: 1)
            expected.apply([.serverIdSet(id: "S1"), .licenseActivated(lic)])
            #expect(try count(store, "licenses") == 0 && store.base.seq == 0)
            for i in 0..<6 {
                let changes: [Change] =
                    // Some with a token's name: the tables keep it (migration 3).
                    [
                        .leaseGranted(lease("l\(i)", token: i % 3 == 0 ? nil : "farm")),
                        .leaseRenewed(id: "l\(i)", expiresUSec: 500)
                    ]
                    + (i % 2 == 0 ? [.leaseReleased(id: "l\(i)")] : [])
                try store.commit(changes, epoch: 1, now: 2)
                expected.apply(changes)
                #expect(store.lastSeq - store.base.seq <= 2 * 3 + 3)
            }
            #expect(store.lastSeq == 17)
            #expect(store.base == LogPosition(seq: 14, epoch: 1))
            #expect(try store.changes(after: 0).map(\.seq) == [15, 16, 17])
            // Folded through 14: l1, l3 and l4 (released at 15, still in the log) are in the tables.
            #expect(try count(store, "licenses") == 1 && count(store, "leases") == 3)
            #expect(try store.load() == expected)
        }
        let reopened = try Store(path: dir + "/t.db", logger: Logger(label: "test"))
        #expect(reopened.lastSeq == 17 && reopened.base.seq == 14)
        #expect(try reopened.load() == expected)
        #expect(try reopened.load().serverIdUsed)
    }

    /// Audit records are read from the log until compaction folds them into the audit table,
    /// then from there: every one once, oldest first, the newest `limit`, from `since` on.
    @Test func auditRecordsOutliveCompaction() throws {
        let dir = tempDir()
        func record(_ i: Int) -> AuditRecord {
            AuditRecord(
                id: "audit-\(i)", timeUSec: USec(100 + i), serverId: "S1", action: "Reserve", via: .dbus,
                uid: UInt32(1000 + i), user: i % 2 == 0 ? "ada" : nil, arguments: ["n": "\(i)"],
                result: i % 3 == 0 ? "AccessDenied" : "ok", detail: i % 3 == 0 ? "no" : "")
        }
        let all = (0..<8).map(record)
        do {
            let store = try Store(path: dir + "/t.db", logger: Logger(label: "test"))
            store.compactKeep = 2
            for r in all { try store.commit([.audited(r)], epoch: 1, now: r.timeUSec) }
            #expect(try count(store, "audit") > 0, "compaction folded some into the table")
            #expect(try store.audit() == all)
            #expect(try store.audit(sinceUSec: 105) == Array(all.suffix(3)))
            #expect(try store.audit(limit: 2) == Array(all.suffix(2)))
        }
        let reopened = try Store(path: dir + "/t.db", logger: Logger(label: "test"))
        #expect(try reopened.audit() == all)
        #expect(try reopened.load() == LicenseState(), "no license state in the trail")
    }

    /// A pair's tables are its log's base: appends leave them alone, a compaction the pair's
    /// node asked for folds the log into them, and the base reads back with the log after it.
    @Test func aPairsTablesHoldItsLogsBase() throws {
        let dir = tempDir()
        var base = LicenseState()
        base.apply(.licenseActivated(lic))
        base.serverId = "S2"
        let record = PairRecord(
            node: 1, peerAddress: "10.0.0.1", peerServerId: "S1", progress: PairProgress(promisedEpoch: 3))
        let entries = (1...4).map { LogEntry(seq: 7 + UInt64($0), epoch: 3, change: .leaseGranted(lease("p\($0)"))) }
        var head = base
        head.apply(entries.map(\.change))
        do {
            let store = try Store(path: dir + "/t.db", logger: Logger(label: "test"))
            // The standalone server's own identity, logged before it paired, is kept.
            try store.commit([.serverIdSet(id: "S2")], epoch: 0, now: 0)
            try store.formPair(record, base: LogBase(seq: 7, epoch: 3, state: base), now: 1)
            try store.append(entries.prefix(2), now: 2)
            #expect(try count(store, "leases") == 0, "the log is not also written into the tables")
            try store.append(entries.dropFirst(2), now: 3, compactTo: 9)
            #expect(try count(store, "leases") == 2 && store.base == LogPosition(seq: 9, epoch: 3))
            #expect(throws: SQLiteError.self) { try store.append([], now: 4, compactTo: 12) }
            #expect(store.base.seq == 9, "a failed compaction leaves the base where it was")
        }
        let reopened = try Store(path: dir + "/t.db", logger: Logger(label: "test"))
        let (storedBase, log) = try reopened.pairLog(serverId: "S2")
        var expectedBase = base
        expectedBase.apply(entries.prefix(2).map(\.change))
        #expect(storedBase == LogBase(seq: 9, epoch: 3, state: expectedBase))
        #expect(log == Array(entries.dropFirst(2)))
        #expect(try reopened.load().leases == head.leases && reopened.load().serverId == "S2")
        // Dissolved, the log goes on as the standalone server's, after the same base.
        try reopened.dissolvePair()
        #expect(try reopened.pairRecord() == nil)
        try reopened.commit([.leaseReleased(id: "p1")], epoch: 3, now: 5)
        head.apply(.leaseReleased(id: "p1"))
        #expect(try Store(path: dir + "/t2.db", logger: Logger(label: "test")).lastSeq == 0)
        #expect(try reopened.load().leases == head.leases && reopened.lastSeq == 12)
    }

    /// Version 1 kept a paired server's state twice (tables holding the state now, the base
    /// as a snapshot); opened by this version, the tables hold the base and nothing is lost.
    @Test func aVersionOneDatabaseMigratesToOneTruth() throws {
        let encoder = JSONEncoder()
        func json(_ value: some Encodable) throws -> String {
            String(decoding: try encoder.encode(value), as: UTF8.self)
        }
        func v1(_ path: String, paired: Bool) throws {
            let db = try SQLiteDatabase(path: path)
            try db.exec(Store.migrations[0].sql + "; PRAGMA user_version=1;")
            let baseChanges: [Change] = [.epochStarted(epoch: 2), .licenseActivated(lic)]
            let logged: [Change] = [.leaseGranted(lease("a")), .leaseGranted(lease("b")), .leaseReleased(id: "a")]
            try db.exec(
                "INSERT INTO meta VALUES ('server_id', 'S2'), ('server_id_used', '0'), ('epoch', '2');"
                    + "INSERT INTO licenses VALUES ('L1', 'P', 'cad', 5, 0, 'S1,S2', 'k', 'doc', 7);"
                    + "INSERT INTO leases VALUES ('b', 'cad', 'c', 1, NULL, NULL, 1, 99, 98, 1);")
            for (i, c) in logged.enumerated() {
                try db.run(
                    "INSERT INTO change_log VALUES (?, 2, 1, ?, "
                        + "?)", .int(Int64(5 + i)), .text(c.kind), .text(try json(c)))
            }
            if paired {
                try db.exec(
                    "INSERT INTO meta VALUES ('pair_role', 'backup'), ('pair_peer_address', '10.0.0.1'),"
                        + " ('pair_peer_server_id', 'S1'), ('pair_promised_epoch', '2'), ('pair_base', '4 2')")
                try db.run("INSERT INTO meta VALUES ('pair_base_state', ?)", .text(try json(baseChanges)))
            }
        }
        let dir = tempDir()
        try v1(dir + "/paired.db", paired: true)
        try v1(dir + "/standalone.db", paired: false)
        let paired = try Store(path: dir + "/paired.db", logger: Logger(label: "test"))
        #expect(paired.schemaVersion == Store.migrations.count)
        #expect(paired.base == LogPosition(seq: 4, epoch: 2) && paired.lastSeq == 7)
        #expect(try count(paired, "leases") == 0 && count(paired, "licenses") == 1)
        #expect(try paired.pairLog(serverId: "S2").log.map(\.seq) == [5, 6, 7])
        #expect(try paired.pairRecord()?.peerServerId == "S1")
        #expect(try paired.meta("pair_base_state") == nil)
        let state = try paired.load()
        #expect(state.leases.keys.sorted() == ["b"] && state.licenses.count == 1 && state.serverId == "S2")
        let standalone = try Store(path: dir + "/standalone.db", logger: Logger(label: "test"))
        #expect(standalone.base == LogPosition(seq: 7, epoch: 2) && standalone.lastSeq == 7)
        #expect(try standalone.changes(after: 0).isEmpty)
        #expect(try standalone.load().leases.keys.sorted() == ["b"])
    }

    /// Compaction folds a run of entries before writing each row once; whatever the run (leases
    /// granted again, renewed after their release, licenses and reservations coming and
    /// going), the tables then hold what applying the entries one by one gives.
    @Test func foldedTablesEqualTheEntriesAppliedOneByOne() throws {
        var seed: UInt64 = 0x5eed
        func next(_ n: Int) -> Int {
            seed = seed &* 6_364_136_223_846_793_005 &+ 1_442_695_040_888_963_407
            return Int((seed >> 33) % UInt64(n))
        }
        func change() -> Change {
            let id = "x\(next(4))"
            switch next(10) {
            case 0, 1:
                var l = lease(id, expires: USec(next(1000)))
                // A borrow now and then, revoked or not (its machine and revocation are columns).
                if next(3) == 0 { (l.machineId, l.borrowRevokedUSec) = ("0123456789abcdef0123456789abcdef", nil) }
                return .leaseGranted(l)
            case 2: return .borrowRevoked(id: id, atUSec: USec(next(1000)))
            case 3, 4: return .leaseRenewed(id: id, expiresUSec: USec(next(1000)))
            case 5: return .leaseReleased(id: id)
            case 6:
                var l = lic
                l.id = id
                return next(2) == 0 ? .licenseActivated(l) : .licenseDeactivated(id: id)
            case 7:
                return next(2) == 0
                    ? .reservationAdded(Reservation(id: id, feature: "cad", holder: "h", count: 1))
                    : .reservationRemoved(id: id)
            case 8: return next(2) == 0 ? .epochStarted(epoch: UInt64(next(9))) : .serverIdSet(id: "S\(next(3))")
            case 9 where next(2) == 0:
                audits += 1
                return .audited(
                    AuditRecord(
                        id: "audit-\(audits)", timeUSec: USec(audits), serverId: "S1", action: "Reserve", via: .dbus,
                        result: "ok"))
            default: return .leasesMerged(epoch: UInt64(next(3)), through: UInt64(next(50)))
            }
        }
        var audits = 0
        let dir = tempDir()
        var all: [Change] = []
        do {
            let store = try Store(path: dir + "/t.db", logger: Logger(label: "test"))
            store.compactKeep = 2
            for step in 0..<300 {
                let batch = (0...next(4)).map { _ in change() }
                try store.commit(batch, epoch: 1, now: USec(step))
                all += batch
                let (base, tail) = try store.loadLog()
                #expect(base.state == LicenseState(changes: Array(all.prefix(Int(base.seq)))), "step \(step)")
                #expect(tail.map(\.change) == Array(all.dropFirst(Int(base.seq))))
                // What the engine starts from without reading the tables again.
                #expect(store.committedState == LicenseState(changes: all), "step \(step)")
            }
        }
        let reopened = try Store(path: dir + "/t.db", logger: Logger(label: "test"))
        #expect(try reopened.load() == LicenseState(changes: all))
        #expect(reopened.committedState == LicenseState(changes: all))
        // The trail beside the state: every record once, in order.
        let trail = try reopened.audit().map(\.id)
        #expect(audits > 10 && trail == (1...audits).map { "audit-\($0)" })
    }

    /// A database of the previous release (schema 2: no lease tokens, no audit table) migrates
    /// and keeps its leases.
    @Test func aVersionTwoDatabaseMigrates() throws {
        let dir = tempDir()
        do {
            let store = try Store(path: dir + "/t.db", logger: Logger(label: "test"))
            store.compactKeep = 1
            try store.commit([.serverIdSet(id: "S1"), .licenseActivated(lic)], epoch: 1, now: 1)
            for i in 0..<4 { try store.commit([.leaseGranted(lease("l\(i)"))], epoch: 1, now: 2) }
            #expect(try count(store, "leases") > 0, "some leases folded into the table")
            try store.db.exec(
                "ALTER TABLE leases DROP COLUMN token; ALTER TABLE leases DROP COLUMN user;"
                    + " ALTER TABLE leases DROP COLUMN host; DROP TABLE audit; DROP TABLE sessions;"
                    + " DROP TABLE denials; DROP TABLE usage_series; PRAGMA user_version=2;")
        }
        let migrated = try Store(path: dir + "/t.db", logger: Logger(label: "test"))
        #expect(migrated.schemaVersion == Store.migrations.count)
        #expect(try migrated.load().leases.keys.sorted() == ["l0", "l1", "l2", "l3"])
        // The leases held when the history began are its first sessions, open.
        let sessions = try migrated.sessions(since: 0, until: .max)
        #expect(sessions.map(\.leaseId) == ["l0", "l1", "l2", "l3"] && sessions.allSatisfy { $0.endUSec == nil })
        #expect(try migrated.audit().isEmpty)
    }

    /// The audit table keeps the newest `auditKeepRecords`.
    @Test func theAuditTableKeepsTheNewestRecords() throws {
        let store = try Store(path: tempDir() + "/t.db", logger: Logger(label: "test"))
        store.compactKeep = 1
        store.auditKeepRecords = 3
        let records = (0..<10).map {
            AuditRecord(
                id: "audit-\($0)", timeUSec: USec(10 + $0), serverId: "S1", action: "Sync", via: .dbus, result: "ok")
        }
        for r in records { try store.commit([.audited(r)], epoch: 1, now: r.timeUSec) }
        #expect(try count(store, "audit") <= 3)
        #expect(try store.audit().map(\.id).suffix(3) == ["audit-7", "audit-8", "audit-9"])
    }
}
