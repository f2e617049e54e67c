import Foundation
import Logging
import TandemCore

/// Durable state: SQLite in WAL mode with synchronous=FULL, one transaction per commit.
///
/// One truth on disk: the state tables hold the state at the log's *base* position
/// (`log_base`), and `change_log` holds every change after it, in order (sequence number,
/// epoch). The state now is the tables with the log applied. A commit only appends to the log;
/// compaction folds the log's oldest entries into the tables. A pair's log is this log: its
/// base is the tables, so a snapshot or a truncation rewrites them, and the pair protocol says
/// how far to compact (its standby may still need entries); standalone, the store compacts by
/// itself, keeping the latest `compactKeep` entries.
public final class Store {
    public let db: SQLiteDatabase
    let logger: Logger
    public internal(set) var lastSeq: UInt64 = 0
    /// The position of the state the tables hold.
    public internal(set) var base = LogPosition(seq: 0, epoch: 0)
    /// The log after the base, as it is on disk: kept in memory so that compaction folds
    /// without reading the log back, and loading replays it once.
    public internal(set) var tail: [LogEntry] = []
    /// Standalone, compaction keeps this many entries (and starts at twice as many).
    public var compactKeep = 10_000
    /// The audit table keeps this many records, the newest (pruned when compaction folds more).
    public var auditKeepRecords = 100_000
    /// The state as it is on disk (the tables with the log applied): what the usage history is
    /// derived against (a release names only its lease).
    var durable = LicenseState()
    /// The leases the last write ended (their ids and features), as the history found them: an
    /// expiry or a release names only its lease, and the metrics count it under its feature.
    public internal(set) var endedLeaseFeatures: [String: String] = [:]
    /// The series' clock (see `recordHistory`).
    var seriesClock: USec = 0
    let encoder = JSONEncoder()

    /// Append-only list of migrations; index + 1 is the schema version.
    static let migrations: [Migration] = [
        Migration(
            sql: """
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
                """),
        // Version 1 kept the state twice: the tables held the state now, and a paired server
        // also kept its log's base as a snapshot in `pair_base_state`.
        Migration(sql: "", code: { try $0.foldTablesToLogBase() }),
        // Leases name the network API token they were taken with.
        Migration(sql: "", code: { try $0.addLeaseTokenColumn() }),
        // The audit trail: records folded from the log (see `audit(since:)`).
        Migration(
            sql: """
                CREATE TABLE audit (
                    id TEXT PRIMARY KEY, time_usec INTEGER NOT NULL, server_id TEXT NOT NULL, action TEXT NOT NULL,
                    via TEXT NOT NULL, uid INTEGER, user TEXT, token TEXT, arguments TEXT NOT NULL,
                    result TEXT NOT NULL, detail TEXT NOT NULL) WITHOUT ROWID;
                CREATE INDEX audit_time ON audit (time_usec);
                """),
        // The usage history: sessions, denials, usage series; leases name their holders.
        historyMigration,
        // Borrows: a lease's borrowing machine and revocation, and a session's machine.
        Migration(sql: "", code: { try $0.addBorrowColumns() }),
        // The log's payloads are the binary form of changes from now on (rows written before stay
        // JSON text and are read as such); an older tandemd, which would misread them, refuses
        // the database by its version.
        Migration(sql: "")
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
        base = try storedBase() ?? base
        tail = try changes(after: base.seq, limit: Int.max)
        // The log may be empty after its base (a pair just formed, a snapshot installed, all of
        // it compacted): the position is then the base's.
        lastSeq = tail.last?.seq ?? base.seq
        durable = try load()
        seriesClock = try lastSeriesTime()
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
            let migration = Self.migrations[version]
            try db.transaction {
                if !migration.sql.isEmpty { try db.exec(migration.sql) }
                try migration.code?(self)
                try db.exec("PRAGMA user_version=\(version + 1)")
            }
            logger.info("migrated state database", metadata: ["schema": "\(version + 1)"])
        }
    }

    // MARK: - Loading

    public func meta(_ key: String) throws -> String? {
        try db.query("SELECT value FROM meta WHERE key = ?", .text(key)).first?.first?.text
    }

    /// The state as committed, kept up to date by every commit (for the history): what `load()`
    /// would read again, without reading the tables a second time at start-up.
    public var committedState: LicenseState { durable }

    /// The state now: the tables with the log applied.
    public func load() throws -> LicenseState {
        var state = try loadTables()
        for e in tail { state.apply(e.change) }
        return state
    }

    /// The log's base (the state the tables hold, at `base`) and every entry after it.
    public func loadLog() throws -> (base: LogBase, log: [LogEntry]) {
        (LogBase(seq: base.seq, epoch: base.epoch, state: try loadTables()), tail)
    }

    /// The lease table's holder columns, or NULLs while a migration before them reads it.
    private func leaseHolderColumns() throws -> String {
        let columns = try db.query("SELECT name FROM pragma_table_info('leases')").compactMap { $0[0].text }
        return (columns.contains("host") ? "user, host" : "NULL, NULL")
            + (columns.contains("machine_id") ? ", machine_id, borrow_revoked_usec" : ", NULL, NULL")
    }

    func loadTables() throws -> LicenseState {
        var state = LicenseState()
        if let id = try meta("server_id") { state.apply(.serverIdSet(id: id)) }
        for r in try db.query(
            "SELECT id, product, feature, seats, not_after_usec, issued_to, key_id, document, activated_usec"
                + " FROM licenses"
        ) {
            state.apply(
                .licenseActivated(
                    License(
                        id: r[0].text!, product: r[1].text!, feature: r[2].text!, seats: UInt32(r[3].int!),
                        notAfterUSec: USec(r[4].int!), issuedTo: r[5].text!.split(separator: ",").map(String.init),
                        keyId: r[6].text!, document: r[7].text!, activatedUSec: USec(r[8].int!))))
        }
        if let n = try db.query("SELECT COUNT(*) FROM leases").first?.first?.int { state.reserveLeases(Int(n)) }
        // Rows are read and turned into leases on a second thread while this one indexes them.
        try db.forEachBatch(
            "SELECT id, feature, client, count, uid, request_id, acquired_usec, expires_usec, ttl_usec, epoch,"
                + " token, \(try leaseHolderColumns()) FROM leases",
            decode: { r in
                var lease = Lease(
                    id: r[0].text!, feature: r[1].text!, client: r[2].text!, count: UInt32(r[3].int!),
                    uid: r[4].int.map { UInt32($0) }, token: r[10].text,
                    holder: Holder(user: r[11].text, host: r[12].text), requestId: r[5].text,
                    acquiredUSec: USec(r[6].int!), expiresUSec: USec(r[7].int!), ttlUSec: USec(r[8].int!),
                    epoch: UInt64(r[9].int!))
                (lease.machineId, lease.borrowRevokedUSec) = (r[13].text, r[14].int.map { USec($0) })
                return lease
            }
        ) { leases in
            for lease in leases { state.apply(.leaseGranted(lease)) }
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

    /// Appends `changes` to the log in one durable transaction (a standalone server's commit),
    /// compacting when the log has grown past twice `compactKeep`. Returns the entries written.
    /// `applied`: the state the changes were applied to (its leases are shared, not copied).
    @discardableResult
    public func commit(
        _ changes: [Change], epoch: UInt64, now: USec, denied: [String: UInt64]? = nil, applied: LicenseState? = nil
    ) throws -> [LogEntry] {
        var seq = lastSeq
        let logged = changes.map { change in
            seq += 1
            return LogEntry(seq: seq, epoch: epoch, change: change)
        }
        let keep = UInt64(compactKeep)
        let folded = seq - base.seq > 2 * keep ? try compaction(through: seq - keep, appended: logged) : nil
        try db.transaction {
            for entry in logged { try insertLog(entry, now: now) }
            try recordHistory(logged, now: now, applied: applied)
            if let denied { try writeDenied(denied) }
            if let folded { try write(folded) }
        }
        // Only once the transaction is durable: a failed one leaves everything where it was.
        extend(with: logged, compacted: folded)
        return logged
    }

    /// Folding the log through a position into the tables.
    struct Compaction {
        var fold: TableFold
        /// Entries folded (they leave the tail).
        var count: Int
        var position: LogPosition
    }

    /// The compaction through `seq` of the tail followed by `appended` (entries being written
    /// in the same transaction); nil when the base is there already.
    func compaction(through seq: UInt64, appended: [LogEntry]) throws -> Compaction? {
        guard seq > base.seq else { return nil }
        var fold = TableFold()
        var count = 0
        var position: LogPosition?
        for e in [tail, appended].joined() {
            guard e.seq <= seq else { break }
            fold.add(e.change)
            count += 1
            position = LogPosition(seq: e.seq, epoch: e.epoch)
        }
        guard let position, position.seq == seq else {
            throw SQLiteError(
                code: 0, message: "cannot compact the log through \(seq): it ends at \(appended.last?.seq ?? lastSeq)")
        }
        return Compaction(fold: fold, count: count, position: position)
    }

    /// Writes a compaction (inside a transaction).
    func write(_ c: Compaction) throws {
        try write(c.fold)
        try db.run("DELETE FROM change_log WHERE seq <= ?", .int(Int64(c.position.seq)))
        try writeBase(c.position)
    }

    /// After a durable transaction: the tail and the position as they now are on disk.
    func extend(with appended: [LogEntry], compacted: Compaction?) {
        tail.append(contentsOf: appended)
        if let compacted {
            tail.removeFirst(compacted.count)
            base = compacted.position
        }
        lastSeq = tail.last?.seq ?? base.seq
    }

    func storedBase() throws -> LogPosition? {
        guard let text = try meta(Self.logBaseKey) else { return nil }
        let parts = text.split(separator: " ").compactMap { UInt64($0) }
        guard parts.count == 2 else { throw SQLiteError(code: 0, message: "bad \(Self.logBaseKey) '\(text)'") }
        return LogPosition(seq: parts[0], epoch: parts[1])
    }

    func writeBase(_ position: LogPosition) throws {
        try setMeta(Self.logBaseKey, "\(position.seq) \(position.epoch)")
    }

    static let logBaseKey = "log_base"

    /// A change's payload is its binary form (`WireWriter`), the pair link's, which costs far
    /// less CPU than JSON on every commit's path. Rows written before version 7 hold JSON text.
    func insertLog(_ entry: LogEntry, now: USec) throws {
        var w = WireWriter()
        entry.change.write(to: &w)
        try db.run(
            "INSERT INTO change_log (seq, epoch, time_usec, kind, payload) VALUES (?, ?, ?, ?, ?)",
            .int(Int64(entry.seq)), .int(Int64(entry.epoch)), .int(Int64(now)), .text(entry.change.kind),
            .blob(w.bytes))
    }

    static func change(payload: SQLiteDatabase.Value, decoder: JSONDecoder) throws -> Change {
        switch payload {
        case .blob(let bytes):
            var r = WireReader(bytes)
            let change = try Change.read(from: &r)
            guard r.atEnd else { throw WireError(what: "trailing bytes in a change-log payload") }
            return change
        case .text(let json): return try decoder.decode(Change.self, from: Data(json.utf8))
        case .int, .null: throw WireError(what: "a change-log payload that is neither bytes nor JSON")
        }
    }

    /// Writes the refused-acquisition counters alone (they are this server's, not logged).
    public func saveDenied(_ denied: [String: UInt64]) throws {
        try db.transaction { try writeDenied(denied) }
    }

    func writeDenied(_ denied: [String: UInt64]) throws {
        for (f, n) in denied {
            try db.run(
                "INSERT INTO denied (feature, count) VALUES (?, ?)"
                    + " ON CONFLICT(feature) DO UPDATE SET count = excluded.count",
                .text(f), .int(Int64(n)))
        }
    }

    public func setMeta(_ key: String, _ value: String) throws {
        try db.run(
            "INSERT INTO meta (key, value) VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET value = excluded.value",
            .text(key), .text(value))
    }

    /// Change-log entries after `seq`, oldest first.
    public func changes(after seq: UInt64, limit: Int = 1000) throws -> [LogEntry] {
        try timedChanges(after: seq, limit: limit).map(\.entry)
    }

    /// Change-log entries after `seq` with the time of the commit that wrote each.
    public func timedChanges(
        after seq: UInt64, limit: Int = 1000
    ) throws -> [(entry: LogEntry, timeUSec: USec)] {
        let decoder = JSONDecoder()
        return try db.query(
            "SELECT seq, epoch, time_usec, payload FROM change_log WHERE seq > ? ORDER BY seq LIMIT ?",
            .int(Int64(seq)), .int(Int64(limit))
        ).map { r in
            (
                LogEntry(
                    seq: UInt64(r[0].int!), epoch: UInt64(r[1].int!),
                    change: try Self.change(payload: r[3], decoder: decoder)), USec(r[2].int!)
            )
        }
    }
}

/// A position in the log: a sequence number and the epoch of the entry there.
public struct LogPosition: Sendable, Equatable {
    public var seq: UInt64
    public var epoch: UInt64

    public init(seq: UInt64, epoch: UInt64) {
        self.seq = seq
        self.epoch = epoch
    }
}

/// A schema step: SQL, and code for what SQL cannot do, in one transaction.
struct Migration: Sendable {
    var sql: String
    var code: (@Sendable (Store) throws -> Void)? = nil
}

extension Store {
    /// Migration 2: the tables come to hold the state at the log's base. A paired server's
    /// tables get its stored base snapshot (its log after the base stays); a standalone
    /// server's log is all in its tables already, so the base moves to its end.
    func foldTablesToLogBase() throws {
        // It writes lease rows as this version does, token and holder included.
        try addLeaseTokenColumn()
        try addLeaseHolderColumns()
        try addBorrowColumns()
        if let position = try meta("pair_base"), let text = try meta("pair_base_state") {
            let changes = try JSONDecoder().decode([Change].self, from: Data(text.utf8))
            let used = try meta("server_id_used") ?? "0"
            try db.exec(
                "DELETE FROM licenses; DELETE FROM leases; DELETE FROM reservations;"
                    + " DELETE FROM meta WHERE key LIKE 'leases_merged_%';")
            try write(TableFold(changes))
            try setMeta("server_id_used", used)
            try setMeta(Self.logBaseKey, position)
        } else {
            let last = try db.query("SELECT seq, epoch FROM change_log ORDER BY seq DESC LIMIT 1").first
            try setMeta(Self.logBaseKey, "\(last?[0].int ?? 0) \(last?[1].int ?? 0)")
            try db.exec("DELETE FROM change_log")
        }
        try db.exec("DELETE FROM meta WHERE key IN ('pair_base', 'pair_base_state')")
    }

    /// Migration 3: `leases.token`. Migration 2 runs it first (it writes lease rows), so it
    /// adds the column only where it is missing.
    func addLeaseTokenColumn() throws {
        let columns = try db.query("SELECT name FROM pragma_table_info('leases')").compactMap { $0[0].text }
        if !columns.contains("token") { try db.exec("ALTER TABLE leases ADD COLUMN token TEXT") }
    }

    /// Migration 6: `leases.machine_id`, `leases.borrow_revoked_usec` and `sessions.machine_id`
    /// where they are missing (migration 2 writes lease rows as this version does).
    func addBorrowColumns() throws {
        let columns = try db.query("SELECT name FROM pragma_table_info('leases')").compactMap { $0[0].text }
        if !columns.contains("machine_id") { try db.exec("ALTER TABLE leases ADD COLUMN machine_id TEXT") }
        if !columns.contains("borrow_revoked_usec") {
            try db.exec("ALTER TABLE leases ADD COLUMN borrow_revoked_usec INTEGER")
        }
        let sessions = try db.query("SELECT name FROM pragma_table_info('sessions')").compactMap { $0[0].text }
        if !sessions.isEmpty && !sessions.contains("machine_id") {
            try db.exec("ALTER TABLE sessions ADD COLUMN machine_id TEXT")
        }
    }
}
