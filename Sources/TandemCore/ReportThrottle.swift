/// How often an event that a source can cause at will (a refused connection, a refused frame)
/// is reported: at most once per source and interval, with the number left unreported since
/// the source's last report. At most `maxSources` sources are remembered, and the table is
/// pruned at most once an interval: a flood from forged sources must not make every event walk
/// it (past the bound, events from new sources are only counted by the caller).
public struct ReportThrottle: Sendable {
    public let intervalUSec: UInt64
    public let maxSources: Int
    private var sources: [String: (lastUSec: UInt64, unreported: UInt64)] = [:]
    private var prunedUSec: UInt64?

    public init(intervalUSec: UInt64, maxSources: Int = 1024) {
        self.intervalUSec = intervalUSec
        self.maxSources = maxSources
    }

    /// Whether an event from `source` at `now` (a monotonic clock, µs) is reported: nil when
    /// not, else how many from it went unreported before this one.
    public mutating func report(_ source: String, now: UInt64) -> UInt64? {
        if let s = sources[source], now < s.lastUSec + intervalUSec {
            sources[source] = (s.lastUSec, s.unreported + 1)
            return nil
        }
        if sources[source] == nil && sources.count >= maxSources {
            if let pruned = prunedUSec, now < pruned + intervalUSec { return nil }
            prunedUSec = now
            sources = sources.filter { now < $0.value.lastUSec + intervalUSec }
            if sources.count >= maxSources { return nil }
        }
        let unreported = sources[source]?.unreported ?? 0
        sources[source] = (now, 0)
        return unreported
    }
}
