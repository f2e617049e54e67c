import Foundation
import TandemBusClient
import TandemCommandLine
import TandemCore
@testable import TandemctlCommands
import Testing

/// `tandemctl usage history`, `report`, `sessions`, `denials` and `leases` with their holders:
/// the parsing of times and steps, and the commands against a running tandemd.
@Suite struct UsageCommandParsing {
    static let now: USec = 1_796_217_190_000_000  // 2026-12-02T13:13:10Z
    static let day: USec = 86_400 * usecPerSecond

    @Test func whenAcceptsNowTimesAgoDatesAndRFC3339() {
        #expect(HistoryFormat.parseWhen("now", now: Self.now) == Self.now)
        #expect(HistoryFormat.parseWhen("-7d", now: Self.now) == Self.now - 7 * Self.day)
        #expect(HistoryFormat.parseWhen("7d", now: Self.now) == Self.now - 7 * Self.day)
        #expect(HistoryFormat.parseWhen("-24h", now: Self.now) == Self.now - Self.day)
        #expect(HistoryFormat.parseWhen("-30m", now: Self.now) == Self.now - 1800 * usecPerSecond)
        #expect(HistoryFormat.parseWhen("2026-12-01", now: Self.now) == 1_796_083_200_000_000)
        #expect(HistoryFormat.parseWhen("2026-12-01T00:00:00Z", now: Self.now) == 1_796_083_200_000_000)
        #expect(HistoryFormat.parseWhen("2026-12-01 08:30", now: Self.now) == 1_796_113_800_000_000)
        #expect(HistoryFormat.parseWhen("-100000000d", now: Self.now) == 0)
        for bad in ["", "yesterday", "-7", "-0d", "2026-13-01", "2026-12-01T00:00", "7x", "--7d"] {
            #expect(HistoryFormat.parseWhen(bad, now: Self.now) == nil, "\(bad)")
        }
    }

    @Test func stepsAreWholeMinutes() throws {
        #expect(try HistoryFormat.parseStep("1m") == 60 * usecPerSecond)
        #expect(try HistoryFormat.parseStep("15m") == 900 * usecPerSecond)
        #expect(try HistoryFormat.parseStep("1h") == 3600 * usecPerSecond)
        #expect(try HistoryFormat.parseStep("1d") == Self.day)
        #expect(try HistoryFormat.parseStep("300") == 300 * usecPerSecond)
        for bad in ["90s", "61", "0", "1x", "", "-1h"] {
            #expect(throws: CLIFailure.self, "\(bad)") { try HistoryFormat.parseStep(bad) }
        }
        #expect(HistoryFormat.describeStep(900 * usecPerSecond) == "15m")
        #expect(HistoryFormat.describeStep(Self.day) == "1d")
    }

    @Test func rangesDefaultToASpanBeforeNowAndMustNotBeEmpty() throws {
        let (since, until) = try HistoryFormat.range(since: nil, until: nil, span: Self.day, now: Self.now)
        #expect(since == Self.now - Self.day && until == Self.now)
        #expect(throws: CLIFailure.self) {
            try HistoryFormat.range(since: "now", until: nil, span: Self.day, now: Self.now)
        }
        #expect(throws: CLIFailure.self) {
            try HistoryFormat.range(since: "bogus", until: nil, span: Self.day, now: Self.now)
        }
    }

    @Test func cellsBarsAndCSV() {
        #expect(HistoryFormat.minute(1_796_113_800_000_000) == "2026-12-01 08:30")
        #expect(HistoryFormat.second(1_796_113_815_000_000) == "2026-12-01 08:30:15")
        #expect(HistoryFormat.bar(2, of: 4, width: 8) == "████░░░░")
        #expect(HistoryFormat.bar(1, of: 1000, width: 8) == "█░░░░░░░")
        #expect(HistoryFormat.bar(999, of: 1000, width: 8) == "███████░")
        #expect(HistoryFormat.bar(5, of: 4, width: 8) == "████████")
        #expect(HistoryFormat.bar(0, of: 0, width: 4) == "    ")
        #expect(HistoryFormat.seatHours(5400) == "1.5" && HistoryFormat.seatHours(0) == "0.0")
        #expect(HistoryFormat.csv(["a", "b,c", "say \"hi\""]) == #"a,"b,c","say ""hi""""#)
        #expect(HistoryFormat.who(user: "", token: "", uid: AuditRow.noUid) == "-")
        #expect(HistoryFormat.who(user: "", token: "farm", uid: AuditRow.noUid) == "token farm")
    }
}

@Suite(.serialized) struct UsageCommands {
    func json(_ r: RunResult) throws -> [[String: Any]] {
        #expect(r.status == 0, "\(r.stderr)")
        return try JSONSerialization.jsonObject(with: Data(r.stdout.utf8)) as? [[String: Any]] ?? []
    }

    @Test func historySessionsDenialsReportsAndLeaseHolders() throws {
        let f = try Fixture()
        let c = try f.bus.client()
        let lease =
            try c.call(
                "Acquire",
                [
                    .string("cad"), .uint32(2), .string("ws-1"),
                    .vardict([("user", .string("ann")), ("host", .string("h1"))])
                ]
            ).first?.stringValue ?? ""
        expectBusError("org.tandem.LicenseManager1.InsufficientSeats") {
            _ = try c.call("Acquire", [.string("cad"), .uint32(100), .string("ws-2"), .vardict([])])
        }

        let leases = try json(tandemctl(f.bus, ["leases", "--json"]))
        #expect(leases.count == 1 && leases.first?["lease_id"] as? String == lease)
        #expect(leases.first?["user"] as? String == "ann" && leases.first?["host"] as? String == "h1")
        #expect(leases.first?["token"] as? String == "" && leases.first?["expires_usec"] is Int)
        let table = try tandemctl(f.bus, ["leases"])
        #expect(table.stdout.hasPrefix("LEASE") && table.stdout.contains("ann") && table.stdout.contains("h1"))

        // `usage` alone is what it was.
        let usage = try json(tandemctl(f.bus, ["usage", "--json"]))
        #expect(usage.first?["in_use"] as? Int == 2)
        #expect(try tandemctl(f.bus, ["usage"]).stdout.hasPrefix("FEATURE"))

        let buckets = try json(tandemctl(f.bus, ["usage", "history", "cad", "--since", "-2h", "--json"]))
        #expect(buckets.count >= 2)
        #expect(buckets.last?["max_in_use"] as? Int == 2 && buckets.last?["denials"] as? Int == 1)
        #expect(
            buckets.last?["acquisitions"] as? Int == 1
                && (buckets.last?["start"] as? String)?.hasSuffix(":00:00Z") == true)
        let csv = try tandemctl(f.bus, ["usage", "history", "cad", "--step", "15m", "--csv"])
        #expect(csv.stdout.hasPrefix("start,start_usec,max_in_use,seats,acquisitions,denials\n"), "\(csv.stderr)")
        let text = try tandemctl(f.bus, ["usage", "history", "cad", "--since", "-30m", "--step", "1m"])
        #expect(text.status == 0 && text.stdout.contains("█"), "\(text.stderr)")
        let badStep = try tandemctl(f.bus, ["usage", "history", "cad", "--step", "90s"])
        #expect(badStep.status != 0 && badStep.stderr.split(separator: "\n").count == 1)

        let sessions = try json(tandemctl(f.bus, ["sessions", "--user", "ann", "--json"]))
        #expect(sessions.count == 1 && sessions.first?["lease_id"] as? String == lease)
        #expect(sessions.first?["end_usec"] == nil && sessions.first?["ended"] == nil)
        #expect(try tandemctl(f.bus, ["sessions"]).stdout.contains("held"))
        let denials = try json(tandemctl(f.bus, ["denials", "--feature", "cad", "--json"]))
        #expect(denials.map { $0["reason"] as? String } == ["insufficient-seats"])
        #expect(try json(tandemctl(f.bus, ["sessions", "--user", "nobody", "--json"])).isEmpty)

        let report = try json(tandemctl(f.bus, ["report", "sessions", "--json"]))
        #expect(report.first?["group"] as? String == "ann" && report.first?["count"] as? Int == 1)
        let byClient = try tandemctl(f.bus, ["report", "denials", "--by", "client", "--csv"])
        #expect(byClient.stdout == "group,count,seat_hours\nws-2,1,0.0\n", "\(byClient.stderr)")
        let reportText = try tandemctl(f.bus, ["report", "sessions", "--by", "host"])
        #expect(reportText.stdout.contains("h1") && reportText.stdout.contains("total"))

        // A refusal from the bus is one line and a failure.
        let bad = try tandemctl(f.bus, ["sessions", "--limit", "0"])
        #expect(bad.status != 0 && bad.stderr.contains("InvalidArgs") && bad.stderr.split(separator: "\n").count == 1)
    }
}
