import TandemCore

/// The usage history as the network API shows it (`/v1/usage/history`, `/v1/sessions`,
/// `/v1/denials`): the D-Bus rows' fields, with times also in RFC 3339.

public struct UsageBucketView: Codable, Sendable, Equatable {
    public var start: String
    public var startUsec: UInt64
    public var maxInUse, seats, acquisitions, denials: UInt32

    public init(_ b: UsageBucket) {
        start = RFC3339.format(usec: b.startUSec)
        startUsec = b.startUSec
        (maxInUse, seats, acquisitions, denials) = (b.maxInUse, b.seats, b.acquisitions, b.denials)
    }
}

public struct SessionView: Codable, Sendable, Equatable {
    public var leaseId, feature, client: String
    public var count: UInt32
    public var user, host, token: String?
    public var uid: UInt32?
    public var start: String
    public var startUsec: UInt64
    /// Absent while the lease is held.
    public var end: String?
    public var endUsec: UInt64?
    public var ended: String?
    /// A borrow's: the `/etc/machine-id` of the machine the seats were taken to.
    public var machineId: String?

    public init(_ s: Session) {
        (leaseId, feature, client, count) = (s.leaseId, s.feature, s.client, s.count)
        (user, host, token, uid) = (s.holder.user, s.holder.host, s.token, s.uid)
        start = RFC3339.format(usec: s.startUSec)
        startUsec = s.startUSec
        end = s.endUSec.map { RFC3339.format(usec: $0) }
        endUsec = s.endUSec
        ended = s.ended?.rawValue
        machineId = s.machineId
    }
}

public struct DenialView: Codable, Sendable, Equatable {
    public var denialId: String
    public var time: String
    public var timeUsec: UInt64
    public var feature, client: String
    public var count: UInt32
    public var user, host, token: String?
    public var uid: UInt32?
    public var reason: String

    public init(_ d: Denial) {
        denialId = d.id
        time = RFC3339.format(usec: d.timeUSec)
        timeUsec = d.timeUSec
        (feature, client, count) = (d.feature, d.client, d.count)
        (user, host, token, uid) = (d.holder.user, d.holder.host, d.token, d.uid)
        reason = d.reason.rawValue
    }
}

/// A history query's range and filter, from the request's query parameters: `since` and
/// `until` (RFC 3339 such as `2026-12-01T00:00:00Z`; default: the last day up to now), `step` (seconds, default 3600), `feature`, `user`, `host`, `client`, `limit`.
public struct HistoryQuery: Sendable, Equatable {
    public var sinceUSec: USec
    public var untilUSec: USec
    public var stepUSec: USec
    public var filter: HistoryFilter

    public static let known: Set = ["since", "until", "step", "feature", "user", "host", "client", "limit"]

    public init(parameters: [(String, String)], now: USec) throws(TandemError) {
        var values: [String: String] = [:]
        for (k, v) in parameters {
            guard Self.known.contains(k) else { throw TandemError(.invalidArgs, "unknown parameter \(quoted(k))") }
            guard values.updateValue(v, forKey: k) == nil else {
                throw TandemError(.invalidArgs, "parameter \(quoted(k)) is given twice")
            }
            guard !v.isEmpty else { throw TandemError(.invalidArgs, "parameter \(quoted(k)) is empty") }
        }
        untilUSec = try values["until"].map { v throws(TandemError) in try Self.time(v, "until") } ?? now
        sinceUSec =
            try values["since"].map { v throws(TandemError) in try Self.time(v, "since") }
            ?? untilUSec - min(untilUSec, 86_400 * usecPerSecond)
        if let step = values["step"] {
            guard let s = UInt64(step), s > 0, s <= 400 * 86_400 else {
                throw TandemError(.invalidArgs, "'step' must be a number of seconds (60, 3600, 86400, ...)")
            }
            stepUSec = s * usecPerSecond
        } else {
            stepUSec = 3600 * usecPerSecond
        }
        var limit: Int?
        if let l = values["limit"] {
            guard let n = Int(l) else { throw TandemError(.invalidArgs, "'limit' must be a whole number") }
            limit = n
        }
        filter = HistoryFilter(
            feature: values["feature"], user: values["user"], host: values["host"], client: values["client"],
            limit: limit)
    }

    /// RFC 3339 (`Z` or an offset, fractions of a second allowed).
    static func time(_ text: String, _ what: String) throws(TandemError) -> USec {
        guard let t = RFC3339.parse(text) else {
            throw TandemError(.invalidArgs, "\(quoted(what)) must be an RFC 3339 time such as 2026-12-01T00:00:00Z")
        }
        return t
    }
}

extension RFC3339 {
    /// "2026-12-01T08:30:00Z", "2026-12-01T09:30:00.5+01:00" -> µs since the epoch (nil if not so;
    /// 0 for a time before it). Fractions beyond microseconds are cut.
    public static func parse(_ text: String) -> USec? {
        let u = Array(text.utf8)
        guard u.count >= 20, u[4] == UInt8(ascii: "-"), u[7] == UInt8(ascii: "-"),
            u[10] == UInt8(ascii: "T") || u[10] == UInt8(ascii: "t"), u[13] == UInt8(ascii: ":"),
            u[16] == UInt8(ascii: ":")
        else { return nil }
        func number(_ r: Range<Int>) -> Int64? {
            var n: Int64 = 0
            for i in r {
                guard u[i] >= 48 && u[i] <= 57 else { return nil }
                n = n * 10 + Int64(u[i] - 48)
            }
            return n
        }
        guard let y = number(0..<4), let mo = number(5..<7), let d = number(8..<10),
            let days = CivilDate.days(year: y, month: mo, day: d), let h = number(11..<13), let mi = number(14..<16),
            let s = number(17..<19), h < 24, mi < 60, s < 61
        else { return nil }
        var i = 19
        var fraction: Int64 = 0
        if i < u.count, u[i] == UInt8(ascii: ".") {
            i += 1
            var scale: Int64 = 100_000
            let start = i
            while i < u.count, u[i] >= 48 && u[i] <= 57 {
                fraction += Int64(u[i] - 48) * scale
                scale /= 10
                i += 1
            }
            guard i > start else { return nil }
        }
        var offset: Int64 = 0
        guard i < u.count else { return nil }
        if u[i] == UInt8(ascii: "Z") || u[i] == UInt8(ascii: "z") {
            i += 1
        } else if u[i] == UInt8(ascii: "+") || u[i] == UInt8(ascii: "-"), i + 6 == u.count,
            u[i + 3] == UInt8(ascii: ":"), let oh = number((i + 1)..<(i + 3)), let om = number((i + 4)..<(i + 6))
        {
            guard oh < 24, om < 60 else { return nil }
            offset = (oh * 3600 + om * 60) * (u[i] == UInt8(ascii: "+") ? 1 : -1)
            i += 6
        } else {
            return nil
        }
        guard i == u.count else { return nil }
        // A time before the Unix epoch is its start (nothing is recorded before it).
        let seconds = days * 86_400 + h * 3600 + mi * 60 + s - offset
        return seconds < 0 ? 0 : USec(seconds) * usecPerSecond + USec(fraction)
    }
}
