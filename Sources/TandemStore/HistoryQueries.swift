import Foundation
import TandemCore

/// Reading the usage history (see `History.swift` for how it is written).
extension Store {
    /// The usage series of `feature` from `since` to `until` (exclusive) in buckets of `step`
    /// (a multiple of one minute), on the UTC grid of the step, at most `maxBuckets`
    /// (the latest; none for an empty range): each bucket's peak in use (the
    /// level it started at, or higher), the seats owned, acquisitions and denials. Summed from
    /// the coarsest rollup that divides the step, so a year by days reads about 400 rows.
    public func usageSeries(
        feature: String, since: USec, until: USec, step: USec, maxBuckets: UInt64 = UsageRollup.maxBuckets
    ) throws -> [UsageBucket] {
        let until = min(until, USec(Int64.max) / 2)
        guard step >= UsageRollup.minStepUSec, step % UsageRollup.minStepUSec == 0, step <= USec(Int64.max) / 4,
            let source = UsageRollup.source(for: step)
        else {
            throw TandemError(.invalidArgs, "step must be a multiple of one minute (60000000 µs)")
        }
        guard until > since else { return [] }
        // At most `maxBuckets`, the latest (as listings keep the newest rows).
        let last = (until - 1) - (until - 1) % step
        let (span, overflow) = (max(maxBuckets, 1) - 1).multipliedReportingOverflow(by: step)
        let first = max(since - since % step, overflow ? 0 : last - min(last, span))
        let count = (last - first) / step + 1
        let start = first, end = last + step
        let key: [SQLiteDatabase.Value] = [.text(feature), .int(Int64(source))]
        let before = try db.query(
            "SELECT last_in_use, seats FROM usage_series WHERE feature = ? AND step_usec = ? AND bucket_usec < ?"
                + " ORDER BY bucket_usec DESC LIMIT 1", arguments: key + [Self.int(start)]
        ).first
        var level = UInt32(before?[0].int ?? 0), seats = UInt32(before?[1].int ?? 0)
        let rows = try db.query(
            "SELECT bucket_usec, max_in_use, last_in_use, seats, acquisitions, denials FROM usage_series"
                + " WHERE feature = ? AND step_usec = ? AND bucket_usec >= ? AND bucket_usec < ? ORDER BY bucket_usec",
            arguments: key + [Self.int(start), Self.int(end)])
        var out: [UsageBucket] = []
        out.reserveCapacity(Int(count))
        var next = 0
        for i in 0..<count {
            let bucketStart = start + i * step, bucketEnd = bucketStart + step
            var b = UsageBucket(startUSec: bucketStart, maxInUse: level, seats: seats, acquisitions: 0, denials: 0)
            while next < rows.count, USec(rows[next][0].int ?? 0) < bucketEnd {
                let r = rows[next].map { UInt32(clamping: $0.int ?? 0) }
                b.maxInUse = max(b.maxInUse, r[1])
                b.seats = max(b.seats, r[3])
                b.acquisitions &+= r[4]
                b.denials &+= r[5]
                (level, seats) = (r[2], r[3])
                next += 1
            }
            out.append(b)
        }
        return out
    }

    /// Sessions that overlap [since, until), the newest `filter.limit` of them by start, oldest
    /// first: those that ended (the table) and those open (the leases held, without an end).
    public func sessions(since: USec, until: USec, filter: HistoryFilter = HistoryFilter()) throws -> [Session] {
        let (conditions, args) = Self.conditions(filter)
        let limit = try Self.limit(filter)
        let rows = try db.query(
            "SELECT lease_id, feature, count, client, user, host, uid, token, start_usec, end_usec, ended, machine_id"
                + " FROM sessions WHERE start_usec < ? AND end_usec >= ?" + conditions
                + " ORDER BY start_usec DESC, lease_id DESC LIMIT ?",
            arguments: [Self.int(until), Self.int(since)] + args + [.int(Int64(limit))])
        let ended = rows.map { r in
            var s = Session(
                leaseId: r[0].text ?? "", feature: r[1].text ?? "", count: UInt32(clamping: r[2].int ?? 0),
                client: r[3].text ?? "", holder: Holder(user: r[4].text, host: r[5].text),
                uid: r[6].int.map { UInt32(clamping: $0) }, token: r[7].text, startUSec: USec(r[8].int ?? 0),
                endUSec: r[9].int.map { USec($0) }, ended: r[10].text.flatMap { SessionEnd(rawValue: $0) })
            s.machineId = r[11].text
            return s
        }
        let all = ended + openSessions(until: until, filter)
        return all.sorted { ($0.startUSec, $0.leaseId) > ($1.startUSec, $1.leaseId) }.prefix(limit).reversed()
    }

    /// The sessions open now (the leases held) that started before `until` and match `filter`.
    func openSessions(until: USec, _ f: HistoryFilter) -> [Session] {
        durable.leases.values.compactMap { l -> Session? in
            guard l.acquiredUSec < until, f.feature.map({ $0 == l.feature }) ?? true,
                f.user.map({ $0 == l.user }) ?? true, f.host.map({ $0 == l.host }) ?? true,
                f.client.map({ $0 == l.client }) ?? true
            else { return nil }
            return Session(l)
        }
    }

    /// Denials in [since, until), the newest `filter.limit` of them, oldest first.
    public func denials(since: USec, until: USec, filter: HistoryFilter = HistoryFilter()) throws -> [Denial] {
        let (conditions, args) = Self.conditions(filter)
        let rows = try db.query(
            "SELECT id, time_usec, feature, count, client, user, host, uid, token, reason FROM denials"
                + " WHERE time_usec >= ? AND time_usec < ?" + conditions + " ORDER BY time_usec DESC, id DESC LIMIT ?",
            arguments: [Self.int(since), Self.int(until)] + args + [.int(Int64(try Self.limit(filter)))])
        return rows.reversed().map { r in
            Denial(
                id: r[0].text ?? "", timeUSec: USec(r[1].int ?? 0), feature: r[2].text ?? "",
                count: UInt32(clamping: r[3].int ?? 0), client: r[4].text ?? "",
                holder: Holder(user: r[5].text, host: r[6].text), uid: r[7].int.map { UInt32(clamping: $0) },
                token: r[8].text, reason: DenialReason(rawValue: r[9].text ?? "") ?? .insufficientSeats)
        }
    }

    /// The chargeback view: sessions overlapping [since, until) per group, with the seat-hours
    /// they held within it (an open session up to `now`), largest first.
    public func sessionReport(
        since: USec, until: USec, by: ReportGrouping, filter: HistoryFilter = HistoryFilter(), now: USec
    ) throws -> [ReportRow] {
        let (conditions, args) = Self.conditions(filter)
        let rows = try db.query(
            "SELECT \(Self.groupColumn(by)) AS g, COUNT(*),"
                + " TOTAL(count * (MIN(end_usec, ?) - MAX(start_usec, ?))) FROM sessions"
                + " WHERE start_usec < ? AND end_usec >= ?" + conditions + " GROUP BY g",
            arguments: [Self.int(until), Self.int(since), Self.int(until), Self.int(since)] + args)
        var groups: [String: (count: UInt64, seatUSec: Double)] = [:]
        for r in rows {
            groups[r[0].text ?? "-"] = (UInt64(r[1].int ?? 0), max(0, Double(r[2].text ?? "0") ?? 0))
        }
        for s in openSessions(until: until, filter) {
            let key = Self.group(s, by)
            let held = Double(s.seatUSec(since: since, until: until, now: now))
            groups[key] = ((groups[key]?.count ?? 0) + 1, (groups[key]?.seatUSec ?? 0) + held)
        }
        return groups.map { ReportRow(group: $0.key, count: $0.value.count, seatHours: $0.value.seatUSec / 3.6e9) }
            .sorted { ($0.seatHours, $0.count, $1.group) > ($1.seatHours, $1.count, $0.group) }
    }

    /// Denials in [since, until) per group, most first.
    public func denialReport(
        since: USec, until: USec, by: ReportGrouping, filter: HistoryFilter = HistoryFilter()
    ) throws -> [ReportRow] {
        let (conditions, args) = Self.conditions(filter)
        let rows = try db.query(
            "SELECT \(Self.groupColumn(by)) AS g, COUNT(*) FROM denials WHERE time_usec >= ? AND time_usec < ?"
                + conditions + " GROUP BY g", arguments: [Self.int(since), Self.int(until)] + args)
        return rows.map { ReportRow(group: $0[0].text ?? "-", count: UInt64($0[1].int ?? 0), seatHours: 0) }
            .sorted { ($0.count, $1.group) > ($1.count, $0.group) }
    }

    /// An open session's group, as `groupColumn` names an ended one's.
    static func group(_ s: Session, _ by: ReportGrouping) -> String {
        switch by {
        case .user: return s.holder.user ?? s.token.map { "token:" + $0 } ?? s.uid.map { "uid:\($0)" } ?? "-"
        case .host: return s.holder.host ?? "-"
        case .feature: return s.feature
        case .client: return s.client
        }
    }

    /// A group's name: a holder without a user name is its token's or its uid's.
    private static func groupColumn(_ by: ReportGrouping) -> String {
        switch by {
        case .user:
            return "COALESCE(user, 'token:' || token, 'uid:' || uid, '-')"
        case .host: return "COALESCE(host, '-')"
        case .feature: return "feature"
        case .client: return "client"
        }
    }

    private static func conditions(_ f: HistoryFilter) -> (String, [SQLiteDatabase.Value]) {
        var sql = "", args: [SQLiteDatabase.Value] = []
        for (column, value) in [("feature", f.feature), ("user", f.user), ("host", f.host), ("client", f.client)] {
            guard let value else { continue }
            sql += " AND \(column) = ?"
            args.append(.text(value))
        }
        return (sql, args)
    }

    private static func limit(_ f: HistoryFilter) throws -> Int {
        let limit = f.limit ?? HistoryFilter.defaultLimit
        guard limit > 0, limit <= HistoryFilter.maxLimit else {
            throw TandemError(.invalidArgs, "limit must be from 1 to \(HistoryFilter.maxLimit)")
        }
        return limit
    }

    static func int(_ t: USec) -> SQLiteDatabase.Value { .int(Int64(min(t, USec(Int64.max)))) }
}
