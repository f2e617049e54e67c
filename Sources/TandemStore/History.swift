import Foundation
import TandemCore

/// The usage history on disk: sessions, denials and the per-feature usage series, written in the
/// same transaction as the log entries they come from (`recordHistory`), on whichever node
/// commits them, so that a standby derives the same history from the replicated log. The
/// history is not state: compaction leaves it alone, and `pruneHistory` keeps a window.
///
/// Event times are the decisions' (a grant's acquisition, a release's `atUSec`, an expiry's
/// expiry time, a denial's time), never a node's commit time, so both nodes place an event in
/// the same bucket.
///
/// A session is written once, when it ends (appended in rowid order): while it is open it is its
/// lease, which the state holds durably anyway, so a grant costs the history no row and a commit
/// dirties few pages however long the history grows. Readers add the open ones from `durable`.
/// A bucket's time never goes back (`seriesClock`): an expiry noticed after a later event is
/// counted where it was noticed.
extension Store {
    static let historyMigration = Migration(
        sql: """
            CREATE TABLE sessions (
                id INTEGER PRIMARY KEY, lease_id TEXT NOT NULL, feature TEXT NOT NULL, count INTEGER NOT NULL,
                client TEXT NOT NULL, user TEXT, host TEXT, uid INTEGER, token TEXT, start_usec INTEGER NOT NULL,
                end_usec INTEGER NOT NULL, ended TEXT NOT NULL);
            CREATE INDEX sessions_start ON sessions (start_usec);
            CREATE TABLE denials (
                id TEXT PRIMARY KEY, time_usec INTEGER NOT NULL, feature TEXT NOT NULL, count INTEGER NOT NULL,
                client TEXT NOT NULL, user TEXT, host TEXT, uid INTEGER, token TEXT, reason TEXT NOT NULL);
            CREATE INDEX denials_time ON denials (time_usec);
            CREATE TABLE usage_series (
                feature TEXT NOT NULL, step_usec INTEGER NOT NULL, bucket_usec INTEGER NOT NULL,
                max_in_use INTEGER NOT NULL, last_in_use INTEGER NOT NULL, seats INTEGER NOT NULL,
                acquisitions INTEGER NOT NULL, denials INTEGER NOT NULL,
                PRIMARY KEY (feature, step_usec, bucket_usec)) WITHOUT ROWID;
            """,
        code: { try $0.addLeaseHolderColumns() })

    /// Adds `leases.user` and `leases.host` where they are missing (migration 2 writes lease rows
    /// as this version does, so it adds them first).
    func addLeaseHolderColumns() throws {
        let columns = try db.query("SELECT name FROM pragma_table_info('leases')").compactMap { $0[0].text }
        for c in ["user", "host"] where !columns.contains(c) { try db.exec("ALTER TABLE leases ADD COLUMN \(c) TEXT") }
    }

    // MARK: - Writing

    /// Records what `entries` (in log order, being written in this transaction) add to the
    /// history, and applies them to `durable`, sharing what they grant with `applied` (the state
    /// that applied them first: see `LeaseTable`). `now` stands in for the time of a release
    /// logged before releases had one.
    func recordHistory(_ entries: some Sequence<LogEntry>, now: USec, applied: LicenseState? = nil) throws {
        endedLeaseFeatures.removeAll(keepingCapacity: true)
        var series = SeriesDelta()
        for e in entries {
            switch e.change {
            case .leaseGranted(let l):
                let old = durable.leases.contains(l.id)
                durable.apply(e.change, sharingWith: applied)
                let t = seriesTime(l.acquiredUSec)
                if !old { series.acquired(l.feature, at: t) }
                series.level(of: l.feature, in: durable, at: t)
            case .leaseReleased(let id, let at, let revoked):
                guard let l = durable.leases[id] else { break }
                durable.apply(e.change)
                let t = at ?? now
                try endSession(l, at: t, revoked == true ? .revoked : .released)
                series.level(of: l.feature, in: durable, at: seriesTime(t))
            case .leaseExpired(let id):
                guard let l = durable.leases[id] else { break }
                durable.apply(e.change)
                try endSession(l, at: l.expiresUSec, .expired)
                series.level(of: l.feature, in: durable, at: seriesTime(l.expiresUSec))
            case .acquisitionDenied(let d):
                try insertDenial(d)
                // A feature without a license has no series (its name is any caller's string).
                guard d.reason != .unknownFeature else { break }
                let t = seriesTime(d.timeUSec)
                series.denied(d.feature, at: t)
                series.level(of: d.feature, in: durable, at: t)
            case .licenseActivated(let l):
                durable.apply(e.change)
                series.level(of: l.feature, in: durable, at: seriesTime(l.activatedUSec))
            case .licenseDeactivated(let id):
                let feature = durable.licenses[id]?.feature
                durable.apply(e.change)
                if let feature { series.level(of: feature, in: durable, at: seriesTime(now)) }
            default:
                durable.apply(e.change)
            }
        }
        try write(series)
    }

    /// The state became `state` other than by appending (a truncated log, a snapshot, a pair
    /// formed): sessions of leases it no longer holds end (released or expired if the new log
    /// says so, else `merged`), and its log's denials are kept (those of leases new to it are
    /// open: they are its leases).
    func recordReplacement(by state: LicenseState, log: some Sequence<LogEntry>, now: USec) throws {
        endedLeaseFeatures.removeAll(keepingCapacity: true)
        var ends: [String: (USec, SessionEnd)] = [:]
        for e in log {
            switch e.change {
            case .leaseReleased(let id, let at, let revoked):
                ends[id] = (at ?? now, revoked == true ? .revoked : .released)
            case .acquisitionDenied(let d):
                try insertDenial(d)
            default:
                break
            }
        }
        var series = SeriesDelta()
        let t = seriesTime(now), features = Set(durable.features).union(state.features)
        for l in durable.leases.values where !state.leases.contains(l.id) {
            let (at, how) = ends[l.id] ?? (l.expiresUSec <= now ? (l.expiresUSec, .expired) : (now, .merged))
            try endSession(l, at: at, how)
        }
        durable = state
        for f in features { series.level(of: f, in: state, at: t) }
        try write(series)
    }

    /// The time an event is counted at in the series: never before the last one counted.
    private func seriesTime(_ t: USec) -> USec {
        seriesClock = max(seriesClock, t)
        return seriesClock
    }

    /// Writes the session of lease `l`, which ended at `at` (never before it started).
    private func endSession(_ l: Lease, at: USec, _ how: SessionEnd) throws {
        endedLeaseFeatures[l.id] = l.feature
        try db.run(
            "INSERT INTO sessions (lease_id, feature, count, client, user, host, uid, token, start_usec, end_usec,"
                + " ended, machine_id) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            .text(l.id), .text(l.feature), .int(Int64(l.count)), .text(l.client), Self.text(l.user),
            Self.text(l.host), l.uid.map { .int(Int64($0)) } ?? .null, Self.text(l.token),
            Self.int(l.acquiredUSec), Self.int(max(at, l.acquiredUSec)), .text(how.rawValue), Self.text(l.machineId))
    }

    private func insertDenial(_ d: Denial) throws {
        try db.run(
            "INSERT OR IGNORE INTO denials (id, time_usec, feature, count, client, user, host, uid, token, reason)"
                + " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            .text(d.id), .int(Int64(d.timeUSec)), .text(d.feature), .int(Int64(d.count)), .text(d.client),
            Self.text(d.holder.user), Self.text(d.holder.host), d.uid.map { .int(Int64($0)) } ?? .null,
            Self.text(d.token), .text(d.reason.rawValue))
    }

    private func write(_ series: SeriesDelta) throws {
        for (key, b) in series.buckets {
            try db.run(
                "INSERT INTO usage_series (feature, step_usec, bucket_usec, max_in_use, last_in_use, seats,"
                    + " acquisitions, denials) VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
                    + " ON CONFLICT (feature, step_usec, bucket_usec) DO UPDATE SET"
                    + " max_in_use = MAX(max_in_use, excluded.max_in_use), last_in_use = excluded.last_in_use,"
                    + " seats = excluded.seats, acquisitions = acquisitions + excluded.acquisitions,"
                    + " denials = denials + excluded.denials",
                .text(key.feature), .int(Int64(key.step)), .int(Int64(key.bucket)), .int(Int64(b.maxInUse)),
                .int(Int64(b.lastInUse)), .int(Int64(b.seats)), .int(Int64(b.acquisitions)),
                .int(Int64(b.denials)))
        }
    }

    static func text(_ s: String?) -> SQLiteDatabase.Value { s.map { .text($0) } ?? .null }

    /// The newest bucket recorded (where the series' clock starts after a restart).
    func lastSeriesTime() throws -> USec {
        USec(try db.query("SELECT MAX(bucket_usec) FROM usage_series").first?.first?.int ?? 0)
    }

    /// Deletes what ended before `cutoff`: sessions, denials, and series buckets (keeping each
    /// series' newest bucket before it, whose level carries into the window). One transaction.
    public func pruneHistory(before cutoff: USec) throws -> (sessions: Int, denials: Int, buckets: Int) {
        let c = SQLiteDatabase.Value.int(Int64(min(cutoff, USec(Int64.max))))
        return try db.transaction {
            // A session that ended before the cutoff started before it (the start index finds it).
            try db.run("DELETE FROM sessions WHERE start_usec < ? AND end_usec < ?", c, c)
            let sessions = db.changes
            try db.run("DELETE FROM denials WHERE time_usec < ?", c)
            let denials = db.changes
            try db.run(
                "DELETE FROM usage_series WHERE bucket_usec < (SELECT MAX(s.bucket_usec) FROM usage_series s"
                    + " WHERE s.feature = usage_series.feature AND s.step_usec = usage_series.step_usec"
                    + " AND s.bucket_usec < ?)", c)
            return (sessions, denials, db.changes)
        }
    }
}

/// The series' buckets one commit touches, summed before they are written (one row each).
struct SeriesDelta {
    struct Key: Hashable {
        var feature: String
        var step: USec
        var bucket: USec
    }
    struct Bucket {
        var maxInUse: UInt32 = 0
        var lastInUse: UInt32 = 0
        var seats: UInt32 = 0
        var acquisitions: UInt32 = 0
        var denials: UInt32 = 0
    }
    private(set) var buckets: [Key: Bucket] = [:]

    private mutating func update(_ feature: String, at t: USec, _ body: (inout Bucket) -> Void) {
        for step in UsageRollup.stepsUSec {
            body(&buckets[Key(feature: feature, step: step, bucket: t - t % step), default: Bucket()])
        }
    }

    /// The feature's level (seats in use, seats owned) after an event at `t`.
    mutating func level(of feature: String, in state: LicenseState, at t: USec) {
        let inUse = state.inUse(feature), seats = state.seats(feature, at: t)
        update(feature, at: t) {
            $0.maxInUse = max($0.maxInUse, inUse)
            $0.lastInUse = inUse
            $0.seats = seats
        }
    }

    mutating func acquired(_ feature: String, at t: USec) { update(feature, at: t) { $0.acquisitions += 1 } }
    mutating func denied(_ feature: String, at t: USec) { update(feature, at: t) { $0.denials += 1 } }
}
