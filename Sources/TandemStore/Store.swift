import Foundation
import Logging
import TandemCore

/// Durable state: SQLite in WAL mode with synchronous=FULL. Tables hold the current
/// state; `change_log` holds every change in order (sequence number, epoch), which feeds
/// replication and catch-up. Each `commit` is one transaction.
public final class Store {
    public let db: SQLiteDatabase
    let logger: Logger
    public internal(set) var lastSeq: UInt64 = 0
    let encoder = JSONEncoder()

    /// Append-only list of migrations; index + 1 is the schema version.
    static let migrations: [String] = [
        """
        CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
        CREATE TABLE licenses (
            id TEXT PRIMARY KEY, product TEXT NOT NULL, feature TEXT NOT NULL, seats INTEGER NOT NULL,
            not_after_usec INTEGER NOT NULL, issued_to TEXT NOT NULL, key_id TEXT NOT NULL,
            document TEXT NOT NULL, activated_usec INTEGER NOT NULL);
        CREATE TABLE leases (
            id TEXT PRIMARY KEY, feature TEXT NOT NULL, client TEXT NOT NULL, count INTEGER NOT NULL,
            uid INTEGER, request_id TEXT, acquired_usec INTEGER NOT NULL, expires_usec INTEGER NOT NULL,
            ttl_usec INTEGER NOT NULL, epoch INTEGER NOT NULL) WITHOUT ROWID;
        CREATE TABLE reservations (
            id TEXT PRIMARY KEY, feature TEXT NOT NULL, holder TEXT NOT NULL, count INTEGER NOT NULL);
        CREATE TABLE denied (feature TEXT PRIMARY KEY, count INTEGER NOT NULL);
        CREATE TABLE change_log (
            seq INTEGER PRIMARY KEY, epoch INTEGER NOT NULL, time_usec INTEGER NOT NULL,
            kind TEXT NOT NULL, payload TEXT NOT NULL);
        """
    ]

    public init(path: String, logger: Logger) throws {
        self.logger = logger
        db = try SQLiteDatabase(path: path)
        // tandemd is the only writer of its database: exclusive locking keeps the WAL index in
        // private memory and spares the lock/unlock system calls of every transaction.
        try db.exec("PRAGMA locking_mode=EXCLUSIVE")
        try db.exec("PRAGMA journal_mode=WAL")
        try db.exec("PRAGMA synchronous=FULL")
        try db.exec("PRAGMA foreign_keys=ON")
        // Checkpoint less often: hot pages (the lease table, the log's tail) are rewritten by
        // nearly every commit and only their last version needs copying into the database.
        try db.exec("PRAGMA wal_autocheckpoint=4000")
        try db.exec("PRAGMA journal_size_limit=67108864")
        guard try db.pragma("journal_mode") == "wal" else {
            throw SQLiteError(code: 0, message: "\(path): cannot enable WAL mode")
        }
        guard try db.pragma("synchronous") == "2" else {
            throw SQLiteError(code: 0, message: "\(path): cannot set synchronous=FULL")
        }
        try migrate()
        // A pair's log may be empty after its base (just formed, a snapshot installed): the
        // position is then the base's.
        let logged = UInt64(try db.query("SELECT COALESCE(MAX(seq), 0) FROM change_log").first?.first?.int ?? 0)
        lastSeq = max(logged, try pairBaseSeq() ?? 0)
    }

    public var schemaVersion: Int { Int((try? db.pragma("user_version")).flatMap { Int($0) } ?? 0) }

    private func migrate() throws {
        let current = Int(try db.pragma("user_version")) ?? 0
        guard current <= Self.migrations.count else {
            throw SQLiteError(
                code: 0,
                message: "\(db.path): schema version \(current) is newer than this tandemd (\(Self.migrations.count))")
        }
        for version in current..<Self.migrations.count {
            try db.transaction {
                try db.exec(Self.migrations[version])
                try db.exec("PRAGMA user_version=\(version + 1)")
            }
            logger.info("migrated state database", metadata: ["schema": "\(version + 1)"])
        }
    }

    // MARK: - Loading

    public func meta(_ key: String) throws -> String? {
        try db.query("SELECT value FROM meta WHERE key = ?", .text(key)).first?.first?.text
    }

    public func load() throws -> LicenseState {
        var state = LicenseState()
        if let id = try meta("server_id") { state.apply(.serverIdSet(id: id)) }
        for r in try db.query(
            "SELECT id, product, feature, seats, not_after_usec, issued_to, key_id, document, activated_usec FROM licenses"
        ) {
            state.apply(
                .licenseActivated(
                    License(
                        id: r[0].text!, product: r[1].text!, feature: r[2].text!, seats: UInt32(r[3].int!),
                        notAfterUSec: USec(r[4].int!), issuedTo: r[5].text!.split(separator: ",").map(String.init),
                        keyId: r[6].text!, document: r[7].text!, activatedUSec: USec(r[8].int!))))
        }
        for r in try db.query(
            "SELECT id, feature, client, count, uid, request_id, acquired_usec, expires_usec, ttl_usec, epoch FROM leases"
        ) {
            state.apply(
                .leaseGranted(
                    Lease(
                        id: r[0].text!, feature: r[1].text!, client: r[2].text!, count: UInt32(r[3].int!),
                        uid: r[4].int.map { UInt32($0) }, requestId: r[5].text, acquiredUSec: USec(r[6].int!),
                        expiresUSec: USec(r[7].int!), ttlUSec: USec(r[8].int!), epoch: UInt64(r[9].int!))))
        }
        for r in try db.query("SELECT id, feature, holder, count FROM reservations") {
            state.apply(
                .reservationAdded(
                    Reservation(id: r[0].text!, feature: r[1].text!, holder: r[2].text!, count: UInt32(r[3].int!))))
        }
        for r in try db.query("SELECT feature, count FROM denied") {
            state.denied[r[0].text!] = UInt64(r[1].int!)
        }
        state.serverIdUsed = try meta("server_id_used") == "1"
        if let e = try meta("epoch"), let n = UInt64(e) { state.epoch = n }
        for r in try db.query("SELECT key, value FROM meta WHERE key LIKE 'leases_merged_%'") {
            if let e = UInt64(r[0].text!.dropFirst("leases_merged_".count)), let n = UInt64(r[1].text!) {
                state.apply(.leasesMerged(epoch: e, through: n))
            }
        }
        return state
    }

    // MARK: - Committing

    /// Writes `changes` and their change-log entries in one durable transaction.
    /// Returns the log entries written.
    @discardableResult
    public func commit(
        _ changes: [Change], epoch: UInt64, now: USec, denied: [String: UInt64]? = nil
    ) throws -> [LogEntry] {
        let logged = try db.transaction {
            var logged: [LogEntry] = []
            var seq = lastSeq
            for change in changes {
                seq += 1
                let entry = LogEntry(seq: seq, epoch: epoch, change: change)
                try write(change)
                try insertLog(entry, now: now)
                logged.append(entry)
            }
            if let denied { try writeDenied(denied) }
            return logged
        }
        // Only once the transaction is durable: a failed one leaves the position where it was.
        if let last = logged.last { lastSeq = last.seq }
        return logged
    }

    func insertLog(_ entry: LogEntry, now: USec) throws {
        let payload = String(decoding: try encoder.encode(entry.change), as: UTF8.self)
        try db.run(
            "INSERT INTO change_log (seq, epoch, time_usec, kind, payload) VALUES (?, ?, ?, ?, ?)",
            .int(Int64(entry.seq)), .int(Int64(entry.epoch)), .int(Int64(now)), .text(entry.change.kind), .text(payload)
        )
    }

    func writeDenied(_ denied: [String: UInt64]) throws {
        for (f, n) in denied {
            try db.run(
                "INSERT INTO denied (feature, count) VALUES (?, ?) ON CONFLICT(feature) DO UPDATE SET count = excluded.count",
                .text(f), .int(Int64(n)))
        }
    }

    public func setMeta(_ key: String, _ value: String) throws {
        try db.run(
            "INSERT INTO meta (key, value) VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET value = excluded.value",
            .text(key), .text(value))
    }

    func write(_ change: Change) throws {
        switch change {
        case .serverIdSet(let id):
            try setMeta("server_id", id)
            try setMeta("server_id_used", "0")
        case .licenseActivated(let l):
            try db.run(
                "INSERT INTO licenses (id, product, feature, seats, not_after_usec, issued_to, key_id, document, activated_usec) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                .text(l.id), .text(l.product), .text(l.feature), .int(Int64(l.seats)), .int(Int64(l.notAfterUSec)),
                .text(l.issuedTo.joined(separator: ",")), .text(l.keyId), .text(l.document),
                .int(Int64(l.activatedUSec)))
            try setMeta("server_id_used", "1")
        case .licenseDeactivated(let id):
            try db.run("DELETE FROM licenses WHERE id = ?", .text(id))
        case .leaseGranted(let l):
            try db.run(
                "INSERT INTO leases (id, feature, client, count, uid, request_id, acquired_usec, expires_usec, ttl_usec, epoch) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                .text(l.id), .text(l.feature), .text(l.client), .int(Int64(l.count)),
                l.uid.map { .int(Int64($0)) } ?? .null, l.requestId.map { .text($0) } ?? .null,
                .int(Int64(l.acquiredUSec)), .int(Int64(l.expiresUSec)), .int(Int64(l.ttlUSec)), .int(Int64(l.epoch)))
        case .leaseRenewed(let id, let expires):
            try db.run("UPDATE leases SET expires_usec = ? WHERE id = ?", .int(Int64(expires)), .text(id))
        case .leaseReleased(let id), .leaseExpired(let id):
            try db.run("DELETE FROM leases WHERE id = ?", .text(id))
        case .reservationAdded(let r):
            try db.run(
                "INSERT INTO reservations (id, feature, holder, count) VALUES (?, ?, ?, ?)",
                .text(r.id), .text(r.feature), .text(r.holder), .int(Int64(r.count)))
        case .reservationRemoved(let id):
            try db.run("DELETE FROM reservations WHERE id = ?", .text(id))
        case .epochStarted(let e):
            try setMeta("epoch", String(e))
        case .leasesMerged(let e, let through):
            try setMeta("leases_merged_\(e)", String(through))
        }
    }

    /// Change-log entries after `seq`, oldest first.
    public func changes(after seq: UInt64, limit: Int = 1000) throws -> [LogEntry] {
        try timedChanges(after: seq, limit: limit).map(\.entry)
    }

    /// Change-log entries after `seq` with the time of the commit that wrote each.
    public func timedChanges(after seq: UInt64, limit: Int = 1000) throws -> [(entry: LogEntry, timeUSec: USec)] {
        let decoder = JSONDecoder()
        return try db.query(
            "SELECT seq, epoch, time_usec, payload FROM change_log WHERE seq > ? ORDER BY seq LIMIT ?",
            .int(Int64(seq)), .int(Int64(limit))
        ).map { r in
            (
                LogEntry(
                    seq: UInt64(r[0].int!), epoch: UInt64(r[1].int!),
                    change: try decoder.decode(Change.self, from: Data(r[3].text!.utf8))), USec(r[2].int!)
            )
        }
    }
}
