import Foundation
import Logging
import Testing
import TandemCore
@testable import TandemStore

/// The usage history derived from committed entries: sessions, denials, the series.
@Suite struct HistoryTests {
    static let minute: USec = 60 * usecPerSecond
    static let t0: USec = 1_800_000_000 * usecPerSecond  // on the minute, hour and day grid

    func lease(_ id: String, count: UInt32 = 1, at: USec, ttl: USec = 10 * minute, user: String? = "ann") -> Lease {
        Lease(
            id: id, feature: "cad", client: "ws-" + id, count: count, uid: 1000, holder: Holder(user: user, host: "h1"),
            requestId: nil, acquiredUSec: at, expiresUSec: at + ttl, ttlUSec: ttl, epoch: 1)
    }

    func denial(_ id: String, at: USec) -> Denial {
        Denial(
            id: id, timeUSec: at, feature: "cad", count: 3, client: "ws-d", holder: Holder(user: "bob", host: "h2"),
            uid: nil, token: "lab", reason: .insufficientSeats)
    }

    /// Grants, a renewal, a release, a revocation, an expiry and a denial, in log order.
    var changes: [Change] {
        let t = Self.t0, m = Self.minute
        var license = lic
        license.activatedUSec = t
        return [
            .licenseActivated(license),
            .leaseGranted(lease("a", count: 2, at: t + m / 2)),
            .leaseGranted(lease("b", at: t + m + 1)),
            .leaseGranted(lease("c", count: 2, at: t + m + 2, ttl: m, user: nil)),
            .leaseRenewed(id: "a", expiresUSec: t + 20 * m),
            .acquisitionDenied(denial("d1", at: t + m + 3)),
            .leaseExpired(id: "c"),
            .leaseReleased(id: "a", atUSec: t + 3 * m, revoked: false),
            .leaseReleased(id: "b", atUSec: t + 4 * m, revoked: true)
        ]
    }

    func check(_ store: Store) throws {
        let t = Self.t0, m = Self.minute
        let sessions = try store.sessions(since: 0, until: .max)
        #expect(sessions.map(\.leaseId) == ["a", "b", "c"])
        #expect(sessions.map(\.ended) == [.released, .revoked, .expired])
        #expect(sessions.map(\.endUSec) == [t + 3 * m, t + 4 * m, t + 2 * m + 2])
        #expect(sessions[0].holder == Holder(user: "ann", host: "h1") && sessions[0].uid == 1000)
        let denials = try store.denials(since: 0, until: .max)
        #expect(denials == [denial("d1", at: t + m + 3)])
        // Minute by minute: 2 in use from 0:30, 5 from 1:01 (the peak) to 2:00.000002, 3 to 3:00,
        // 1 to 4:00, then 0 (a bucket's peak includes the level it starts at).
        let series = try store.usageSeries(feature: "cad", since: t, until: t + 6 * m, step: m)
        #expect(series.map(\.maxInUse) == [2, 5, 5, 3, 1, 0])
        #expect(series.map(\.acquisitions) == [1, 2, 0, 0, 0, 0])
        #expect(series.map(\.denials) == [0, 1, 0, 0, 0, 0])
        #expect(series.allSatisfy { $0.seats == 5 })
        // The same from the hourly rollup.
        let hourly = try store.usageSeries(feature: "cad", since: t, until: t + 2 * 60 * m, step: 60 * m)
        #expect(hourly.map(\.maxInUse) == [5, 0] && hourly[0].acquisitions == 3 && hourly[0].denials == 1)
        // Chargeback: ann held 2 seats for 2.5 minutes; the session of a holder without a user
        // name counts under its uid.
        let byUser = try store.sessionReport(since: t, until: t + 60 * m, by: .user, now: t + 60 * m)
        let ann = try #require(byUser.first { $0.group == "ann" })
        #expect(ann.count == 2 && abs(ann.seatHours - (2 * 2.5 + 3 - 1.0 / 60_000_000) / 60) < 1e-6)
        #expect(byUser.contains { $0.group == "uid:1000" && $0.count == 1 })
        #expect(
            try store.denialReport(since: t, until: t + m * 60, by: .host) == [
                ReportRow(group: "h2", count: 1, seatHours: 0)
            ])
        #expect(
            try store.sessions(since: 0, until: .max, filter: HistoryFilter(user: "ann", limit: 1)).map(\.leaseId) == [
                "b"
            ])
    }

    @Test func committedEntriesMakeTheHistoryAndItSurvivesReopen() throws {
        let path = tempDir() + "/t.db"
        do {
            let store = try Store(path: path, logger: Logger(label: "test"))
            for c in changes { try store.commit([c], epoch: 1, now: Self.t0 + 99 * Self.minute) }
            try check(store)
        }
        try check(try Store(path: path, logger: Logger(label: "test")))
    }

    /// A standby appends the serving node's entries (in other batches): the same history.
    @Test func aStandbyDerivesTheSameHistoryFromTheLog() throws {
        let store = try Store(path: tempDir() + "/t.db", logger: Logger(label: "test"))
        let entries = changes.enumerated().map { LogEntry(seq: UInt64($0.offset + 1), epoch: 1, change: $0.element) }
        try store.append(entries.prefix(4), now: 1)
        try store.append(entries.dropFirst(4), now: 2)
        try check(store)
    }

    @Test func badRangesAreRefusedAndPruningKeepsTheWindow() throws {
        let store = try Store(path: tempDir() + "/t.db", logger: Logger(label: "test"))
        for c in changes { try store.commit([c], epoch: 1, now: 1) }
        let t = Self.t0, m = Self.minute
        #expect(throws: TandemError.self) { try store.usageSeries(feature: "cad", since: t, until: t + m, step: 1000) }
        #expect(try store.usageSeries(feature: "cad", since: t, until: t, step: m).isEmpty)
        // A range of more buckets than a series answers gives its latest.
        let longest = try store.usageSeries(feature: "cad", since: 0, until: t + 6 * m, step: m)
        #expect(longest.count == Int(UsageRollup.maxBuckets) && longest.last?.startUSec == t + 5 * m)
        #expect(longest.suffix(6).map(\.maxInUse) == [2, 5, 5, 3, 1, 0])
        #expect(throws: TandemError.self) { try store.sessions(since: 0, until: .max, filter: HistoryFilter(limit: 0)) }
        let pruned = try store.pruneHistory(before: t + 3 * m + 1)
        #expect(pruned.sessions == 2 && pruned.denials == 1)
        #expect(try store.sessions(since: 0, until: .max).map(\.leaseId) == ["b"])
        // The level before the window still carries into it.
        let after = try store.usageSeries(feature: "cad", since: t + 4 * m, until: t + 5 * m, step: m)
        #expect(after.map(\.seats) == [5])
    }

    /// A truncated log or a snapshot replaces the state: a session whose lease it no longer
    /// holds ends (`merged`), one it gained opens, and the denials in its log are kept once.
    @Test func aReplacedStateEndsTheSessionsItNoLongerHolds() throws {
        let store = try Store(path: tempDir() + "/t.db", logger: Logger(label: "test"))
        let t = Self.t0, m = Self.minute
        let a = lease("a", at: t), b = lease("b", at: t + 1), c = lease("c", at: t + 2)
        let kept: [Change] = [.licenseActivated(lic), .leaseGranted(a)]
        let entries = (kept + [.leaseGranted(b)]).enumerated().map {
            LogEntry(seq: UInt64($0.offset + 1), epoch: 1, change: $0.element)
        }
        try store.append(entries, now: t)
        let log = (kept + [.leaseGranted(c), .acquisitionDenied(denial("d1", at: t + 3))]).enumerated().map {
            LogEntry(seq: UInt64($0.offset + 1), epoch: 2, change: $0.element)
        }
        let state = LicenseState(changes: log.map(\.change))
        for _ in 0..<2 {
            try store.replace(
                state: state, base: LogBase(seq: 0, epoch: 0, state: LicenseState()), log: log, now: t + m,
                progress: PairProgress(promisedEpoch: 2))
        }
        let sessions = try store.sessions(since: 0, until: .max)
        #expect(sessions.map(\.leaseId) == ["a", "b", "c"])
        #expect(sessions.map(\.ended) == [nil, .merged, nil] && sessions[1].endUSec == t + m)
        #expect(try store.denials(since: 0, until: .max).map(\.id) == ["d1"])
    }
}
