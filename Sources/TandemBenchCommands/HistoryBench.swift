import Foundation
import Logging
import TandemCore
import TandemStore

/// `tandem-bench --history`: the usage history's reads over a year of one-minute data and a
/// million sessions, written through the store's own commits (as tandemd writes them).
extension TandemBench {
    func runHistory() throws {
        let work = dir + "/tandem-bench-history-\(getpid())"
        try FileManager.default.createDirectory(atPath: work, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: work) }
        let store = try Store(path: work + "/history.db", logger: Logger(label: "bench"))
        let minute: USec = 60 * usecPerSecond, day = 1440 * minute
        let start: USec = 1_767_225_600 * usecPerSecond  // 2026-01-01T00:00:00Z
        let users = (0..<200).map { "user-\($0)" }, hosts = (0..<50).map { "host-\($0)" }
        let license = License(
            id: "L", product: "Bench", feature: "bench", seats: 100, notAfterUSec: 0, issuedTo: [], keyId: "",
            document: "", activatedUSec: start)
        try store.commit([.licenseActivated(license)], epoch: 1, now: start)

        // A year: each minute three leases are granted and the three of 20 minutes before end
        // (about 60 held at any time), one commit per simulated hour.
        let t0 = Date()
        var n = 0, changes: [Change] = []
        var held: [(String, USec)] = []
        var rng = SplitMix64(seed: 7)
        for m in 0..<(365 * 1440) {
            let t = start + USec(m) * minute
            for k in 0..<3 {
                let id = "lease-\(n)"
                n += 1
                let lease = Lease(
                    id: id, feature: "bench", client: "ws-\(n % 500)", count: 1, uid: 1000,
                    holder: Holder(
                        user: users[Int(rng.next() % UInt64(users.count))],
                        host: hosts[Int(rng.next() % UInt64(hosts.count))]),
                    requestId: nil, acquiredUSec: t + USec(k) * usecPerSecond, expiresUSec: t + 3600 * usecPerSecond,
                    ttlUSec: 3600 * usecPerSecond, epoch: 1)
                changes.append(.leaseGranted(lease))
                held.append((id, t))
            }
            while let first = held.first, first.1 + 20 * minute <= t {
                changes.append(.leaseReleased(id: first.0, atUSec: t + 30 * usecPerSecond, revoked: false))
                held.removeFirst()
            }
            if m % 60 == 59 {
                try store.commit(changes, epoch: 1, now: t)
                changes = []
            }
        }
        try store.commit(changes, epoch: 1, now: start + 365 * day)
        let written = Date().timeIntervalSince(t0)
        let end = start + 365 * day

        func timed<T>(_ body: () throws -> T) rethrows -> (T, Double) {
            let t = Date()
            let v = try body()
            return (v, Date().timeIntervalSince(t))
        }
        let (byMinute, tMinute) = try timed {
            try store.usageSeries(feature: "bench", since: start, until: end, step: minute)
        }
        let (byHour, tHour) = try timed {
            try store.usageSeries(feature: "bench", since: start, until: end, step: 60 * minute)
        }
        let (byDay, tDay) = try timed { try store.usageSeries(feature: "bench", since: start, until: end, step: day) }
        let (report, tReport) = try timed {
            try store.sessionReport(since: start, until: end, by: .user, now: end)
        }
        let (listed, tList) = try timed { try store.sessions(since: start, until: end) }
        let size = (try? FileManager.default.attributesOfItem(atPath: work + "/history.db")[.size] as? Int) ?? 0
        print(
            """
            history: \(n) sessions over 365 days written in \(String(format: "%.1f", written)) s \
            (\(Int(Double(n * 2) / written)) entries/s, \(size / 1_048_576) MiB)
            GetUsageHistory, a year by minute: \(byMinute.count) buckets in \(ms(tMinute)) \
            (peak \(byMinute.map(\.maxInUse).max() ?? 0))
            GetUsageHistory, a year by hour:   \(byHour.count) buckets in \(ms(tHour))
            GetUsageHistory, a year by day:    \(byDay.count) buckets in \(ms(tDay))
            report sessions --by user, a year: \(report.count) groups of \(report.map(\.count).reduce(0, +)) \
            sessions in \(ms(tReport))
            ListSessions, a year (newest \(listed.count)): \(ms(tList))
            """)
    }

    private func ms(_ seconds: Double) -> String { String(format: "%.1f ms", seconds * 1000) }
}
