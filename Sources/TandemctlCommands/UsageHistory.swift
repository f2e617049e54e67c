/// The usage history on the command line: `usage history` (the series of one feature),
/// `report` (chargeback: sessions or denials grouped by user, host, feature or client),
/// `sessions` and `denials` (the rows themselves). See docs/dbus-api.md, GetUsageHistory.
import ArgumentParser
import Foundation
import TandemAPI
import TandemBusClient
import TandemCommandLine
import TandemCore

/// Times, durations and cells of the history commands: pure functions, unit-testable.
enum HistoryFormat {
    /// Microseconds since the epoch, now.
    static func now() -> USec { UInt64(Date().timeIntervalSince1970 * 1e6) }

    /// A duration in seconds: `90s`, `15m`, `1h`, `1d`, `2w` or a plain number of seconds.
    /// nil for anything else, zero, or more than fits.
    static func parseDuration(_ text: String) -> UInt64? {
        let t = text.trimmingCharacters(in: .whitespaces)
        if let plain = UInt64(t) { return plain > 0 && plain <= UInt64.max / usecPerSecond ? plain : nil }
        guard let unit = t.last, let n = UInt64(t.dropLast()), n > 0,
            let scale = ["s": UInt64(1), "m": 60, "h": 3600, "d": 86_400, "w": 604_800][unit],
            n <= UInt64.max / usecPerSecond / scale
        else { return nil }
        return n * scale
    }

    /// WHEN: `now`, a time ago (`-7d`, `-24h`, `-30m`, `-90s`; the `-` may be left out), RFC 3339
    /// (`2026-12-01T00:00:00Z`), a UTC date (`2026-12-01`, its midnight) or a UTC date and time
    /// (`2026-12-01 08:30[:00]`). nil if it is none of these.
    static func parseWhen(_ text: String, now: USec) -> USec? {
        let t = text.trimmingCharacters(in: .whitespaces)
        if t.lowercased() == "now" { return now }
        let ago = t.hasPrefix("-") ? String(t.dropFirst()) : t
        if let last = ago.last, last.isLetter, let seconds = parseDuration(ago) {
            let usec = seconds * usecPerSecond
            return now > usec ? now - usec : 0
        }
        if let t = RFC3339.parse(t) { return t }
        let parts = t.split(separator: " ", omittingEmptySubsequences: true)
        guard (1...2).contains(parts.count), let days = CivilDate.parse(String(parts[0])) else { return nil }
        var seconds = UInt64(days) * 86_400
        if parts.count == 2 {
            let hms = parts[1].split(separator: ":", omittingEmptySubsequences: false)
            guard (2...3).contains(hms.count), hms.allSatisfy({ $0.count == 2 && UInt64($0) != nil }) else {
                return nil
            }
            let (h, m, s) = (UInt64(hms[0])!, UInt64(hms[1])!, hms.count == 3 ? UInt64(hms[2])! : 0)
            guard h < 24, m < 60, s < 60 else { return nil }
            seconds += h * 3600 + m * 60 + s
        }
        return seconds * usecPerSecond
    }

    /// `--step`: a duration (`1m`, `15m`, `1h`, `1d`, or seconds), a whole number of minutes; in µs.
    static func parseStep(_ text: String) throws(CLIFailure) -> USec {
        guard let seconds = parseDuration(text) else {
            throw CLIFailure("--step: '\(text)' is not a duration such as 1m, 15m, 1h, 1d or a number of seconds")
        }
        guard seconds % 60 == 0 else { throw CLIFailure("--step: '\(text)' is not a whole number of minutes") }
        return seconds * usecPerSecond
    }

    /// `--since` and `--until` to a range: `until` defaults to now, `since` to `span` before it.
    static func range(since: String?, until: String?, span: USec, now: USec) throws(CLIFailure) -> (USec, USec) {
        func when(_ text: String, _ option: String) throws(CLIFailure) -> USec {
            guard let t = parseWhen(text, now: now) else {
                throw CLIFailure(
                    "\(option): '\(text)' is not now, a time ago (-7d, -24h, -30m), YYYY-MM-DD or RFC 3339 "
                        + "(2026-12-01T00:00:00Z)")
            }
            return t
        }
        let end = try until.map { v throws(CLIFailure) in try when(v, "--until") } ?? now
        let start = try since.map { v throws(CLIFailure) in try when(v, "--since") } ?? end - min(end, span)
        guard start < end else {
            throw CLIFailure("--since (\(minute(start))) is not before --until (\(minute(end)))")
        }
        return (start, end)
    }

    /// "1d", "6h", "15m" for a step in µs.
    static func describeStep(_ usec: USec) -> String {
        let s = usec / usecPerSecond
        if s % 86_400 == 0 { return "\(s / 86_400)d" }
        if s % 3600 == 0 { return "\(s / 3600)h" }
        if s % 60 == 0 { return "\(s / 60)m" }
        return "\(s)s"
    }

    /// "2026-12-01 08:30" (UTC).
    static func minute(_ usec: USec) -> String { String(second(usec).prefix(16)) }

    /// "2026-12-01 08:30:15" (UTC).
    static func second(_ usec: USec) -> String {
        String(RFC3339.format(usec: usec).prefix(19)).replacingOccurrences(of: "T", with: " ")
    }

    /// `used` of `seats` as `width` cells: `█` for the seats in use, `░` for the free ones (blank
    /// when there are none). A bucket with any use shows at least one `█`, one below its seats at
    /// least one `░`.
    static func bar(_ used: UInt32, of seats: UInt32, width: Int = 40) -> String {
        let full: Int
        if used == 0 && seats == 0 {
            return String(repeating: " ", count: width)
        } else if used == 0 {
            full = 0
        } else if used >= seats {
            full = width
        } else {
            let rounded = (UInt64(used) * UInt64(width) * 2 + UInt64(seats)) / (2 * UInt64(seats))
            full = min(max(Int(rounded), 1), width - 1)
        }
        return String(repeating: "█", count: full) + String(repeating: "░", count: width - full)
    }

    /// Seat-seconds as seat-hours, to a tenth ("12.5").
    static func seatHours(_ seatSeconds: UInt64) -> String {
        let tenths = (seatSeconds + 180) / 360
        return "\(tenths / 10).\(tenths % 10)"
    }

    /// One CSV line (RFC 4180): a field with a comma, a quote or a line break is quoted.
    static func csv(_ fields: [String]) -> String {
        fields.map { f in
            f.contains(where: { $0 == "," || $0 == "\"" || $0 == "\n" || $0 == "\r" })
                ? "\"" + f.replacingOccurrences(of: "\"", with: "\"\"") + "\"" : f
        }
        .joined(separator: ",")
    }

    /// Who held or asked, for a table: the user, else the token, else the uid, else "-".
    static func who(user: String, token: String, uid: UInt32) -> String {
        if !user.isEmpty { return cell(user) }
        if !token.isEmpty { return "token " + cell(token) }
        return uid == AuditRow.noUid ? "-" : "uid \(uid)"
    }

    /// A caller's text for a table: control characters escaped, "-" when empty.
    static func cell(_ text: String) -> String { text.isEmpty ? "-" : escapingControlCharacters(text) }
}

/// `BusOptions` for the commands whose `--user` filters by user: the session bus is `--user-bus`.
struct HistoryBusOptions: ParsableArguments {
    @Flag(name: .customLong("user-bus"), help: "Talk to tandemd on the session bus instead of the system bus.")
    var userBus = false
    @Flag(name: .long, help: "Print JSON instead of a table.")
    var json = false

    var bus: BusOptions {
        var b = BusOptions()
        (b.user, b.json) = (userBus, json)
        return b
    }
}

/// `--csv`, next to `--json` (of `BusOptions`).
struct CSVOption: ParsableArguments {
    @Flag(name: .long, help: "Print CSV (a header line, then one line a row) instead of a table.")
    var csv = false
}

/// `--since` and `--until`.
struct RangeOptions: ParsableArguments {
    // `.unconditional`: `--since -7d` is a value, not the options -7 and -d.
    @Option(
        parsing: .unconditional,
        help: ArgumentHelp(
            "From then on: now, a time ago (-7d, -24h, -30m), YYYY-MM-DD (UTC) or RFC 3339 (2026-12-01T00:00:00Z).",
            valueName: "when"))
    var since: String?
    @Option(parsing: .unconditional, help: ArgumentHelp("Up to then (default: now); as --since.", valueName: "when"))
    var until: String?

    func range(span: USec) throws -> (since: USec, until: USec) {
        try HistoryFormat.range(since: since, until: until, span: span, now: HistoryFormat.now())
    }
}

/// The filter of ListSessions, ListDenials and GetUsageReport.
struct HistoryFilterOptions: ParsableArguments {
    @Option(help: "Only this feature.") var feature: String?
    @Option(help: "Only this user (as given to Acquire).") var user: String?
    @Option(help: "Only this host (as given to Acquire).") var host: String?
    @Option(help: "Only this client id.") var client: String?

    func pairs() -> [(String, BusValue)] {
        [("feature", feature), ("user", user), ("host", host), ("client", client)].compactMap { k, v in
            v.map { (k, BusValue.string($0)) }
        }
    }
}

private func checkFormats(_ bus: BusOptions, _ csv: CSVOption) throws {
    if bus.json && csv.csv { throw ValidationError("--json and --csv cannot be used together") }
}

/// Calls `method` and reads its rows, a D-Bus error or a wrong reply as a one-line failure.
private func fetch<Row: BusRow>(_ bus: BusOptions, _ method: ManagerMethod, _ args: [BusValue]) throws -> [Row] {
    let reply = try bus.call(method, args)
    do { return try Row.rows(reply) } catch { throw CLIFailure(bus.describe(error)) }
}

struct UsageHistoryCmd: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "history",
        abstract: "The peak of seats in use of FEATURE over time, with acquisitions and denials, per step.")
    @OptionGroup var bus: BusOptions
    @OptionGroup var format: CSVOption
    @Argument(help: "Feature name.") var feature: String
    @OptionGroup var range: RangeOptions
    @Option(help: "Bucket size: 1m, 15m, 1h, 1d or seconds, a whole number of minutes (default 1h).")
    var step: String = "1h"

    func validate() throws { try checkFormats(bus, format) }

    func run() throws {
        let stepUSec = try HistoryFormat.parseStep(step)
        let (since, until) = try range.range(span: 86_400 * usecPerSecond)
        let rows: [UsageBucketRow] = try fetch(
            bus, .getUsageHistory, [.string(feature), .uint64(since), .uint64(until), .uint64(stepUSec)])
        if bus.json {
            print(
                Output.json(
                    rows.map { r in
                        [
                            "start": RFC3339.format(usec: r.startUSec), "start_usec": r.startUSec,
                            "max_in_use": r.maxInUse, "seats": r.seats, "acquisitions": r.acquisitions,
                            "denials": r.denials
                        ] as [String: Any]
                    }))
        } else if format.csv {
            print(HistoryFormat.csv(["start", "start_usec", "max_in_use", "seats", "acquisitions", "denials"]))
            for r in rows {
                print(
                    HistoryFormat.csv(
                        [
                            RFC3339.format(usec: r.startUSec), String(r.startUSec), String(r.maxInUse),
                            String(r.seats), String(r.acquisitions), String(r.denials)
                        ]))
            }
        } else {
            print(
                "\(HistoryFormat.cell(feature)): peak seats in use per \(HistoryFormat.describeStep(stepUSec)), "
                    + "\(HistoryFormat.minute(since)) to \(HistoryFormat.minute(until)) UTC")
            print(
                Output.table(
                    [
                        "START (UTC)", "PEAK IN USE OF SEATS".padding(toLength: 40, withPad: " ", startingAt: 0),
                        "PEAK/SEATS", "ACQUIRED", "DENIED"
                    ],
                    rows.map { r in
                        [
                            HistoryFormat.minute(r.startUSec), HistoryFormat.bar(r.maxInUse, of: r.seats),
                            "\(r.maxInUse)/\(r.seats)", String(r.acquisitions), String(r.denials)
                        ]
                    }))
        }
    }
}

struct Report: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Chargeback: sessions (with seat-hours) or denials per user, host, feature or client.")

    enum Kind: String, ExpressibleByArgument, CaseIterable {
        case sessions, denials
    }
    enum GroupBy: String, ExpressibleByArgument, CaseIterable {
        case user, host, feature, client
    }

    @OptionGroup var busOptions: HistoryBusOptions
    var bus: BusOptions { busOptions.bus }
    @OptionGroup var format: CSVOption
    @Argument(help: "What to count: sessions or denials.") var kind: Kind
    @OptionGroup var range: RangeOptions
    @Option(help: "Group by user, host, feature or client.") var by: GroupBy = .user
    @OptionGroup var filter: HistoryFilterOptions

    func validate() throws { try checkFormats(bus, format) }

    func run() throws {
        // The default range is the last 30 days.
        let (since, until) = try range.range(span: 30 * 86_400 * usecPerSecond)
        let rows: [UsageReportRow] = try fetch(
            bus, .getUsageReport,
            [.string(kind.rawValue), .uint64(since), .uint64(until), .string(by.rawValue), .vardict(filter.pairs())])
        if bus.json {
            print(
                Output.json(
                    rows.map { r in
                        [
                            "group": r.group, "count": r.count,
                            "seat_hours": Double(HistoryFormat.seatHours(r.seatSeconds)) ?? 0,
                            "seat_seconds": r.seatSeconds
                        ] as [String: Any]
                    }))
        } else if format.csv {
            print(HistoryFormat.csv(["group", "count", "seat_hours"]))
            for r in rows {
                print(HistoryFormat.csv([r.group, String(r.count), HistoryFormat.seatHours(r.seatSeconds)]))
            }
        } else {
            let count = rows.reduce(UInt64(0)) { $0 &+ $1.count }
            let seatSeconds = rows.reduce(UInt64(0)) { $0 &+ $1.seatSeconds }
            let sessions = kind == .sessions
            let header =
                [by.rawValue.uppercased(), sessions ? "SESSIONS" : "DENIALS"] + (sessions ? ["SEAT-HOURS"] : [])
            var cells = rows.map { r in
                [HistoryFormat.cell(r.group), String(r.count)]
                    + (sessions ? [HistoryFormat.seatHours(r.seatSeconds)] : [])
            }
            cells.append(["total", String(count)] + (sessions ? [HistoryFormat.seatHours(seatSeconds)] : []))
            let span = "\(HistoryFormat.minute(since)) to \(HistoryFormat.minute(until)) UTC"
            print("\(kind.rawValue) by \(by.rawValue), \(span)")
            print(Output.table(header, cells))
        }
    }
}

/// `--limit`, for `sessions` and `denials`.
struct LimitOption: ParsableArguments {
    @Option(help: "At most this many rows, the newest (default 10000, at most 1000000).") var limit: UInt32?

    func pairs() -> [(String, BusValue)] { limit.map { [("limit", BusValue.uint32($0))] } ?? [] }
}

/// What `sessions` and `denials` share: the bus and the format, the range (default the last
/// 24 hours), the filter and the limit.
struct ListingOptions: ParsableArguments {
    @OptionGroup var busOptions: HistoryBusOptions
    @OptionGroup var format: CSVOption
    @OptionGroup var range: RangeOptions
    @OptionGroup var filter: HistoryFilterOptions
    @OptionGroup var limit: LimitOption

    func validate() throws { try checkFormats(busOptions.bus, format) }

    func rows<Row: BusRow>(_ method: ManagerMethod) throws -> [Row] {
        let (since, until) = try range.range(span: 86_400 * usecPerSecond)
        return try fetch(
            busOptions.bus, method, [.uint64(since), .uint64(until), .vardict(filter.pairs() + limit.pairs())])
    }
}

struct Sessions: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Leases from grant to end that overlap a range (default: the last 24 hours), oldest first.")
    @OptionGroup var listing: ListingOptions
    var bus: BusOptions { listing.busOptions.bus }
    var format: CSVOption { listing.format }

    func run() throws {
        let rows: [SessionRow] = try listing.rows(.listSessions)
        if bus.json {
            print(
                Output.json(
                    rows.map { r -> [String: Any] in
                        var o: [String: Any] = [
                            "lease_id": r.leaseId, "feature": r.feature, "client": r.client, "count": r.count,
                            "user": r.user, "host": r.host, "token": r.token,
                            "start": RFC3339.format(usec: r.startUSec), "start_usec": r.startUSec
                        ]
                        if r.uid != AuditRow.noUid { o["uid"] = r.uid }
                        if r.endUSec != 0 {
                            o["end"] = RFC3339.format(usec: r.endUSec)
                            o["end_usec"] = r.endUSec
                        }
                        if !r.ended.isEmpty { o["ended"] = r.ended }
                        return o
                    }))
        } else if format.csv {
            print(
                HistoryFormat.csv([
                    "lease_id", "feature", "client", "count", "user", "host", "token", "uid", "start", "start_usec",
                    "end", "end_usec", "ended"
                ]))
            for r in rows {
                let held = r.endUSec == 0
                print(
                    HistoryFormat.csv([
                        r.leaseId, r.feature, r.client, String(r.count), r.user, r.host, r.token,
                        r.uid == AuditRow.noUid ? "" : String(r.uid), RFC3339.format(usec: r.startUSec),
                        String(r.startUSec), held ? "" : RFC3339.format(usec: r.endUSec),
                        held ? "" : String(r.endUSec), r.ended
                    ]))
            }
        } else {
            print(
                Output.table(
                    ["START (UTC)", "END", "FEATURE", "COUNT", "USER", "HOST", "CLIENT", "LEASE", "ENDED"],
                    rows.map { r in
                        [
                            HistoryFormat.second(r.startUSec),
                            r.endUSec == 0 ? "held" : HistoryFormat.second(r.endUSec),
                            HistoryFormat.cell(r.feature), String(r.count),
                            HistoryFormat.who(user: r.user, token: r.token, uid: r.uid), HistoryFormat.cell(r.host),
                            HistoryFormat.cell(r.client), r.leaseId, HistoryFormat.cell(r.ended)
                        ]
                    }))
        }
    }
}

struct Denials: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Refused acquisitions in a range (default: the last 24 hours) and why, oldest first.")
    @OptionGroup var listing: ListingOptions
    var bus: BusOptions { listing.busOptions.bus }
    var format: CSVOption { listing.format }

    func run() throws {
        let rows: [DenialRow] = try listing.rows(.listDenials)
        if bus.json {
            print(
                Output.json(
                    rows.map { r -> [String: Any] in
                        var o: [String: Any] = [
                            "denial_id": r.id, "time": RFC3339.format(usec: r.timeUSec), "time_usec": r.timeUSec,
                            "feature": r.feature, "count": r.count, "client": r.client, "user": r.user,
                            "host": r.host, "token": r.token, "reason": r.reason
                        ]
                        if r.uid != AuditRow.noUid { o["uid"] = r.uid }
                        return o
                    }))
        } else if format.csv {
            print(
                HistoryFormat.csv([
                    "denial_id", "time", "time_usec", "feature", "count", "client", "user", "host", "token", "uid",
                    "reason"
                ]))
            for r in rows {
                print(
                    HistoryFormat.csv([
                        r.id, RFC3339.format(usec: r.timeUSec), String(r.timeUSec), r.feature, String(r.count),
                        r.client, r.user, r.host, r.token, r.uid == AuditRow.noUid ? "" : String(r.uid), r.reason
                    ]))
            }
        } else {
            print(
                Output.table(
                    ["TIME (UTC)", "FEATURE", "COUNT", "USER", "HOST", "CLIENT", "REASON"],
                    rows.map { r in
                        [
                            HistoryFormat.second(r.timeUSec), HistoryFormat.cell(r.feature), String(r.count),
                            HistoryFormat.who(user: r.user, token: r.token, uid: r.uid), HistoryFormat.cell(r.host),
                            HistoryFormat.cell(r.client), HistoryFormat.cell(r.reason)
                        ]
                    }))
        }
    }
}
