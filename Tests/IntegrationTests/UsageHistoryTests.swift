import Foundation
import TandemBusClient
import TandemClient
import TandemCore
import Testing

/// The usage history end to end: what products did over D-Bus and HTTP comes back as sessions,
/// denials and the usage series, survives kill -9, and is the same on the backup after a failover.
@Suite(.serialized) struct UsageHistory {
    static func options(_ pairs: [(String, BusValue)]) -> BusValue { .vardict(pairs) }

    static func sessions(_ c: BusClient, filter: [(String, BusValue)] = []) throws -> [SessionRow] {
        try SessionRow.rows(c.call("ListSessions", [.uint64(0), .uint64(UInt64(Int64.max)), options(filter)]))
    }

    static func denials(_ c: BusClient) throws -> [DenialRow] {
        try DenialRow.rows(c.call("ListDenials", [.uint64(0), .uint64(UInt64(Int64.max)), options([])]))
    }

    @Test func whatProductsDidComesBackAndSurvivesKillNine() throws {
        let f = try Fixture()
        let c = try f.bus.client()
        let base = "http://" + (try f.daemon.httpAddress)
        let started = realtimeNowUSec()
        func acquire(_ count: UInt32, _ client: String, _ opts: [(String, BusValue)]) throws -> String {
            try c.call("Acquire", [.string("cad"), .uint32(count), .string(client), Self.options(opts)]).first?
                .stringValue ?? ""
        }
        // Over D-Bus: a named holder that renews and releases; root without names (its login
        // name and this host are recorded); a short lease left to expire.
        let a = try acquire(2, "ws-1", [("user", .string("ann")), ("host", .string("h1"))])
        _ = try c.call("Renew", [.string(a)])
        _ = try c.call("Release", [.string(a)])
        let r = try acquire(1, "ws-root", [])
        let b = try acquire(3, "ws-2", [("ttl_usec", .uint64(1_000_000)), ("user", .string("ann"))])
        try waitFor("the short lease to expire", seconds: 10) { try !leaseIds(c).contains(b) }
        _ = try c.call("Release", [.string(r)])
        // The peak: every seat held, then refusals for want of seats and of a license.
        let full = try acquire(5, "ws-3", [("user", .string("dan"))])
        expectBusError("org.tandem.LicenseManager1.InsufficientSeats") { _ = try acquire(1, "ws-4", []) }
        expectBusError("org.tandem.LicenseManager1.UnknownFeature") {
            _ = try c.call("Acquire", [.string("cam"), .uint32(1), .string("ws-5"), Self.options([])])
        }
        // Over HTTP: refused while full, then granted and released once a seat is free.
        let refused = try http(
            "POST", base + "/v1/leases", body: #"{"feature":"cad","client":"web-1","user":"bob","host":"h2"}"#)
        #expect(refused.status == 409, "\(refused.body)")
        _ = try c.call("Release", [.string(full)])
        let granted = try http(
            "POST", base + "/v1/leases", body: #"{"feature":"cad","client":"web-2","user":"carol","host":"h3"}"#)
        #expect(granted.status == 201, "\(granted.body)")
        let web = granted.object["lease_id"] as? String ?? ""
        #expect(granted.object["user"] as? String == "carol" && granted.object["host"] as? String == "h3")
        #expect(try http("DELETE", base + "/v1/leases/" + web).status == 204)

        func check(_ c: BusClient, _ when: String) throws {
            let s = try Self.sessions(c)
            #expect(s.map(\.leaseId) == [a, r, b, full, web], "\(when): \(s)")
            guard s.count == 5 else { return }
            #expect(s.map(\.ended) == ["released", "released", "expired", "released", "released"], "\(when)")
            #expect((s[0].user, s[0].host, s[0].uid, s[0].count) == ("ann", "h1", 0, 2), "\(when)")
            #expect(s[1].user == "root" && s[1].host == ProcessInfo.processInfo.hostName, "\(when): \(s[1])")
            #expect((s[4].user, s[4].host, s[4].uid) == ("carol", "h3", AuditRow.noUid), "\(when)")
            // The expired lease ended at its expiry, a second after its grant.
            #expect(s[2].endUSec - s[2].startUSec == 1_000_000, "\(when): \(s[2])")
            #expect(s.allSatisfy { $0.startUSec >= started && $0.endUSec >= $0.startUSec }, "\(when)")
            let d = try Self.denials(c)
            #expect(
                d.map(\.reason) == ["insufficient-seats", "unknown-feature", "insufficient-seats"], "\(when): \(d)")
            #expect(d.map(\.client) == ["ws-4", "ws-5", "web-1"] && d.last?.user == "bob" && d.last?.host == "h2")
            // The series shows the peak: all five seats.
            let now = realtimeNowUSec()
            let series = try UsageBucketRow.rows(
                c.call(
                    "GetUsageHistory",
                    [.string("cad"), .uint64(started - 60_000_000), .uint64(now + 60_000_000), .uint64(60_000_000)]))
            #expect(series.map(\.maxInUse).max() == 5, "\(when): \(series)")
            #expect(series.map(\.acquisitions).reduce(0, +) == 5 && series.map(\.denials).reduce(0, +) == 2)
            #expect(series.last?.seats == 5 && series.first { $0.maxInUse == 5 }?.seats == 5, "\(when): \(series)")
            // By user: ann held 2 seats and 3 seats; dan 5.
            let report = try UsageReportRow.rows(
                c.call(
                    "GetUsageReport",
                    [.string("sessions"), .uint64(0), .uint64(now + 1), .string("user"), Self.options([])]))
            #expect(Set(report.map(\.group)) == ["ann", "root", "dan", "carol"], "\(when): \(report)")
            #expect(report.first { $0.group == "ann" }?.count == 2)
        }
        try check(c, "before the kill")
        // The network API says the same.
        let sessionsJSON = try http("GET", base + "/v1/sessions?since=2000-01-01T00:00:00Z")
        #expect(
            (sessionsJSON.json as? [[String: Any]])?.compactMap { $0["lease_id"] as? String } == [a, r, b, full, web],
            "\(sessionsJSON.body)")
        let denialsJSON = try http("GET", base + "/v1/denials?since=2000-01-01T00:00:00Z&user=bob")
        #expect((denialsJSON.json as? [[String: Any]])?.map { $0["reason"] as? String } == ["insufficient-seats"])
        // Decades by minutes: the latest 10000 buckets (D-Bus answers up to 600000), the peak among them.
        let decades = try http("GET", base + "/v1/usage/history?feature=cad&since=2000-01-01T00:00:00Z&step=60")
        let buckets = decades.json as? [[String: Any]] ?? []
        #expect(buckets.count == 10_000, "\(decades.status) \(decades.body.prefix(300))")
        #expect(buckets.compactMap { $0["max_in_use"] as? Int }.max() == 5)
        let bad = try http("GET", base + "/v1/usage/history?feature=cad&step=61")
        #expect(bad.status == 400 && bad.body.contains("InvalidArgs"), "\(bad.body)")
        expectBusError("org.freedesktop.DBus.Error.InvalidArgs") {
            _ = try c.call("ListSessions", [.uint64(0), .uint64(1), Self.options([("colour", .string("red"))])])
        }

        f.daemon.stop(SIGKILL)
        try f.daemon.start()
        try check(try f.bus.client(), "after kill -9 and a restart")
        // And tandemctl, for scripts.
        let listed = try tandemctl(f.bus, ["sessions", "--since", "2000-01-01", "--json"])
        let rows = try JSONSerialization.jsonObject(with: Data(listed.stdout.utf8)) as? [[String: Any]] ?? []
        #expect(rows.compactMap { $0["lease_id"] as? String } == [a, r, b, full, web], "\(listed.stderr)")
        #expect(rows.first?["user"] as? String == "ann" && rows[2]["ended"] as? String == "expired")
        let refusals = try tandemctl(f.bus, ["denials", "--since", "2000-01-01", "--json"])
        let denied = try JSONSerialization.jsonObject(with: Data(refusals.stdout.utf8)) as? [[String: Any]] ?? []
        #expect(
            denied.compactMap { $0["reason"] as? String } == [
                "insufficient-seats", "unknown-feature", "insufficient-seats"
            ])
    }

    /// Many leases expiring at once are one journal line with the counts per feature, not a
    /// line each (each is a session's end in the history).
    @Test func manyExpiriesAtOnceAreOneJournalLine() throws {
        let f = try Fixture(extraConfig: "")
        let c = try f.bus.client()
        for i in 0..<5 {
            _ = try c.call(
                "Acquire",
                [.string("cad"), .uint32(1), .string("ws-\(i)"), Self.options([("ttl_usec", .uint64(1_000_000))])])
        }
        try waitFor("the leases to expire", seconds: 10) { try leaseIds(c).isEmpty }
        #expect(!f.daemon.log().contains("leases expired"))
        #expect(f.daemon.log().components(separatedBy: "lease expired").count - 1 == 5)
        // A second batch, larger than a line each, expires at once (while tandemd was stopped):
        // one summary.
        let license = try f.vendor.issue(to: [f.serverId], feature: "cae", seats: 20, id: "LIC-CAE")
        _ = try c.call("ActivateLicense", [.string(license)])
        for (feature, n) in [("cad", 5), ("cae", 12)] {
            for i in 0..<n {
                _ = try c.call(
                    "Acquire",
                    [
                        .string(feature), .uint32(1), .string("\(feature)-\(i)"),
                        Self.options([("ttl_usec", .uint64(3_000_000))])
                    ])
            }
        }
        f.daemon.stop()
        usleep(3_500_000)
        try f.daemon.start()
        let c2 = try f.bus.client()
        try waitFor("all to expire", seconds: 10) { try leaseIds(c2).isEmpty }
        let log = f.daemon.log()
        #expect(log.contains("17 leases expired") && log.contains("cad=5 cae=12"), "\(log.suffix(3000))")
        #expect(log.components(separatedBy: "lease expired").count - 1 == 5, "the first five only")
        #expect(try Self.sessions(c2).filter { $0.ended == "expired" }.count == 22)
    }

    /// The standby derives the history from the replicated log: after the primary dies, the
    /// backup answers the same sessions and denials.
    @Test func theBackupAnswersTheSameHistoryAfterAFailover() throws {
        let f = try PairFixture().formed(seats: 2)
        let ca = try f.a.client(), cb = try f.b.client()
        let held =
            try ca.call(
                "Acquire", [.string("cad"), .uint32(2), .string("ws-1"), Self.options([("user", .string("ann"))])]
            ).first?.stringValue ?? ""
        expectBusError("org.tandem.LicenseManager1.InsufficientSeats") {
            _ = try ca.call("Acquire", [.string("cad"), .uint32(1), .string("ws-2"), Self.options([])])
        }
        _ = try ca.call("Release", [.string(held)])
        let primarySessions = try Self.sessions(ca), primaryDenials = try Self.denials(ca)
        #expect(primarySessions.count == 1 && primaryDenials.count == 1)
        try waitFor("the backup holding the release and the denial", seconds: 10) {
            try Self.sessions(cb) == primarySessions && Self.denials(cb) == primaryDenials
        }
        f.a.stop(SIGKILL)
        try waitFor("takeover", seconds: 10) { try cb.get("Serving") == .bool(true) }
        #expect(try Self.sessions(cb) == primarySessions)
        #expect(try Self.denials(cb) == primaryDenials)
        #expect(primarySessions.first?.user == "ann" && primarySessions.first?.ended == "released")
    }
}

/// Realtime µs, as the daemon's clock.
func realtimeNowUSec() -> UInt64 {
    var ts = timespec()
    clock_gettime(CLOCK_REALTIME, &ts)
    return UInt64(ts.tv_sec) * 1_000_000 + UInt64(ts.tv_nsec / 1000)
}

/// Over HTTP with named tokens (issue 11): a renewed and released lease and one left to expire are
/// sessions carrying the token's name, a refusal a denial with it; the filters by host and a
/// limit pick what they say.
@Suite(.serialized) struct UsageHistoryOverHTTP {
    @Test func tokenNamesRenewalsAndExpiriesAreInTheHistory() throws {
        let t = try TokenFixture("plant-a aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\nplant-b bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb\n")
        let (a, b) = ("aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa", "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb")
        func take(_ body: String, _ token: String) throws -> String {
            let r = try http("POST", t.base + "/v1/leases", body: body, token: token)
            #expect(r.status == 201, "\(r.body)")
            return r.object["lease_id"] as? String ?? ""
        }
        let kept = try take(#"{"feature":"cad","count":2,"client":"cam-1","user":"ann","host":"h1"}"#, a)
        #expect(try http("POST", t.base + "/v1/leases/\(kept)/renew", token: a, contentType: nil).status == 200)
        #expect(try http("DELETE", t.base + "/v1/leases/\(kept)", token: a).status == 204)
        let short = try take(#"{"feature":"cad","client":"cam-2","user":"bo","host":"h2","ttl_sec":1}"#, b)
        let c = try t.fixture.bus.client()
        try waitFor("the short lease to expire", seconds: 10) { try !leaseIds(c).contains(short) }
        let refused = try http(
            "POST", t.base + "/v1/leases", body: #"{"feature":"cad","count":9,"client":"cam-3","host":"h3"}"#, token: b)
        #expect(refused.status == 409)

        let all = try UsageHistory.sessions(c)
        #expect(all.map(\.leaseId) == [kept, short] && all.map(\.ended) == ["released", "expired"], "\(all)")
        #expect(all.map(\.token) == ["plant-a", "plant-b"] && all.map(\.uid) == [AuditRow.noUid, AuditRow.noUid])
        #expect(all.last.map { $0.endUSec - $0.startUSec } == 1_000_000, "expired at its expiry")
        let denial = try UsageHistory.denials(c)
        #expect(denial.map(\.token) == ["plant-b"] && denial.map(\.host) == ["h3"], "\(denial)")
        // Filters: by host, and the newest `limit`.
        #expect(try UsageHistory.sessions(c, filter: [("host", .string("h2"))]).map(\.leaseId) == [short])
        #expect(try UsageHistory.sessions(c, filter: [("limit", .uint32(1))]).map(\.leaseId) == [short])
        // The same over HTTP and tandemctl --json.
        let web = try http("GET", t.base + "/v1/sessions?host=h1", token: a)
        let rows = (try? JSONSerialization.jsonObject(with: Data(web.body.utf8))) as? [[String: Any]] ?? []
        #expect(rows.map { $0["token"] as? String } == ["plant-a"], "\(web.body)")
        let cli = try tandemctl(t.fixture.bus, ["sessions", "--json"])
        #expect(cli.stdout.contains("\"plant-b\""), "\(cli.stdout)")
    }
}
