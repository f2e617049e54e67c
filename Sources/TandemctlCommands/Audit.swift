import ArgumentParser
import Foundation
import TandemBusClient
import TandemCommandLine
import TandemCore

struct Audit: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Who did what: administrative actions, done and refused (administrators only).")
    @OptionGroup var bus: BusOptions
    @Option(
        help: ArgumentHelp(
            "Only records from then on: YYYY-MM-DD, 'YYYY-MM-DD HH:MM[:SS]' (UTC) or a time ago (90s, 30m, 12h, 7d).",
            valueName: "when"))
    var since: String?
    @Option(help: "At most this many records, the newest (default 10000, at most 100000).") var limit: UInt32 = 0

    func run() throws {
        var sinceUSec: UInt64 = 0
        if let since {
            guard let t = Self.parseSince(since, now: UInt64(Date().timeIntervalSince1970 * 1e6)) else {
                throw CLIFailure(
                    "--since: '\(since)' is not YYYY-MM-DD, 'YYYY-MM-DD HH:MM[:SS]' or a time ago like 12h")
            }
            sinceUSec = t
        }
        let reply = try bus.call(.listAudit, [.uint64(sinceUSec), .uint32(limit)])
        let list: [AuditRow]
        do { list = try AuditRow.rows(reply) } catch { throw CLIFailure(bus.describe(error)) }
        if bus.json {
            print(
                Output.json(
                    list.map { r -> [String: Any] in
                        var o: [String: Any] = [
                            "id": r.id, "time_usec": r.timeUSec, "time": Output.time(r.timeUSec),
                            "server_id": r.serverId,
                            "action": r.action, "via": r.via, "arguments": r.arguments, "result": r.result,
                            "detail": r.detail
                        ]
                        if r.uid != AuditRow.noUid { o["uid"] = r.uid }
                        if !r.user.isEmpty { o["user"] = r.user }
                        if !r.token.isEmpty { o["token"] = r.token }
                        return o
                    }))
        } else {
            print(
                Output.table(
                    ["TIME", "ACTION", "BY", "VIA", "RESULT", "DETAILS"],
                    list.map { r in [Output.time(r.timeUSec), r.action, Self.who(r), r.via, r.result, Self.details(r)] }
                ))
        }
    }

    /// "alice (1000)", "root (0)", "token cad-farm", or "-" for a signal.
    static func who(_ r: AuditRow) -> String {
        let user = escapingControlCharacters(r.user, keepBackslashes: true)
        let token = escapingControlCharacters(r.token, keepBackslashes: true)
        if r.uid != AuditRow.noUid { return user.isEmpty ? "uid \(r.uid)" : "\(user) (\(r.uid))" }
        return token.isEmpty ? "-" : "token \(token)"
    }

    /// The arguments as `key=value` (quoted when needed), then the refusal's message; control
    /// characters escaped, so that a caller's text cannot steer the terminal.
    static func details(_ r: AuditRow) -> String {
        let args = r.arguments.sorted { $0.key < $1.key }.map {
            "\(escapingControlCharacters($0.key, keepBackslashes: true))=\(quotedIfNeeded($0.value))"
        }
        let detail = escapingControlCharacters(r.detail, keepBackslashes: true)
        return (args + (detail.isEmpty ? [] : [detail])).joined(separator: " ")
    }

    /// Printable ASCII without spaces, quotes or `=` as it is; anything else quoted and escaped.
    static func quotedIfNeeded(_ v: String) -> String {
        let plain =
            !v.isEmpty
            && v.unicodeScalars.allSatisfy {
                $0.value > 0x20 && $0.value < 0x7F && !"\"'=\\".unicodeScalars.contains($0)
            }
        // Backslashes are kept: the server stored the text escaped already.
        return plain ? v : "'" + escapingControlCharacters(v, escapeQuote: true, keepBackslashes: true) + "'"
    }

    /// `--since`: a UTC date, a UTC date and time, or a duration ago (`s`, `m`, `h`, `d`).
    static func parseSince(_ text: String, now: UInt64) -> UInt64? {
        let t = text.trimmingCharacters(in: .whitespaces)
        if let unit = t.last, let n = UInt64(t.dropLast()), n > 0 {
            let seconds: UInt64? = ["s": 1, "m": 60, "h": 3600, "d": 86_400][unit]
            guard let seconds, n <= UInt64.max / (seconds * usecPerSecond) else { return nil }
            let ago = n * seconds * usecPerSecond
            return now > ago ? now - ago : 0
        }
        let parts = t.split(separator: " ", omittingEmptySubsequences: true)
        guard (1...2).contains(parts.count), let days = CivilDate.parse(String(parts[0])) else { return nil }
        var seconds = UInt64(days) * 86_400
        if parts.count == 2 {
            let hms = parts[1].split(separator: ":", omittingEmptySubsequences: false).map { UInt64($0) }
            guard (2...3).contains(hms.count), hms.allSatisfy({ $0 != nil }), parts[1].count == hms.count * 3 - 1 else {
                return nil
            }
            let (h, m, s) = (hms[0]!, hms[1]!, hms.count == 3 ? hms[2]! : 0)
            guard h < 24, m < 60, s < 60 else { return nil }
            seconds += h * 3600 + m * 60 + s
        }
        return seconds * usecPerSecond
    }
}
