import Foundation
import TandemBusClient
import TandemTesting
import Testing

/// The samples of a Prometheus text exposition: "name{labels}" -> value.
func samples(_ text: String) -> [String: Double] {
    var out: [String: Double] = [:]
    for line in text.split(separator: "\n") where !line.hasPrefix("#") {
        guard let space = line.lastIndex(of: " "), let value = Double(line[line.index(after: space)...]) else {
            continue
        }
        out[String(line[..<space])] = value
    }
    return out
}

/// `GET /metrics` (issue 11): a live scrape passes promtool, and says what GetUsage and the
/// pair's properties say at that moment.
@Suite(.serialized) struct MetricsEndpoint {
    static let promtool = "/usr/bin/promtool"

    @Test func aLiveScrapePassesPromtoolAndAgreesWithGetUsage() throws {
        guard FileManager.default.isExecutableFile(atPath: Self.promtool) else {
            Issue.record("promtool is not installed (apt-get install prometheus)")
            return
        }
        let f = try Fixture()
        let c = try f.bus.client()
        _ = try c.call("Acquire", [.string("cad"), .uint32(2), .string("ws-1"), .vardict([])])
        _ = try c.call("Reserve", [.string("cad"), .uint32(1), .string("ws-9")])
        // Refusals: too many seats; 3 of the 3 unused, one of them reserved for ws-9; no license.
        for (count, feature) in [(50, "cad"), (3, "cad"), (1, "nosuch")] {
            let refused = try? c.call(
                "Acquire", [.string(feature), .uint32(UInt32(count)), .string("ws-2"), .vardict([])])
            #expect(refused == nil)
        }
        // Over HTTP too, for the request metrics.
        let http201 = try http(
            "POST", "http://" + (try f.daemon.httpAddress) + "/v1/leases", body: #"{"feature":"cad","client":"ws-3"}"#)
        #expect(http201.status == 201)
        // Methods beyond HTTP's own (WebDAV's, which the parser knows; it refuses made-up ones) are "other".
        for made in ["PROPFIND", "MKCOL"] { _ = try http(made, "http://" + (try f.daemon.httpAddress) + "/v1/leases") }
        let base = "http://" + (try f.daemon.httpAddress)
        let scrape = try http("GET", base + "/metrics", contentType: nil)
        #expect(scrape.status == 200)
        #expect(scrape.headers.lowercased().contains("content-type: text/plain; version=0.0.4"), "\(scrape.headers)")
        let file = makeTempDir("metrics") + "/scrape.txt"
        try scrape.body.write(toFile: file, atomically: true, encoding: .utf8)
        let check = try run("/bin/sh", ["-c", "\(Self.promtool) check metrics < \(file)"])
        #expect(check.status == 0, "promtool: \(check.stdout)\(check.stderr)\n\(scrape.body)")
        #expect(check.stdout.isEmpty && check.stderr.isEmpty, "promtool's lint: \(check.stdout)\(check.stderr)")

        // The same numbers as GetUsage: (feature, seats, in use, reserved, available, denied).
        let s = samples(scrape.body)
        let usage = listRows(try c.call("GetUsage"))
        #expect(!usage.isEmpty)
        for row in usage {
            let feature = row[0].stringValue ?? ""
            let l = "{feature=\"\(feature)\"}"
            let want: [(String, BusValue)] = [
                ("tandem_feature_seats", row[1]), ("tandem_feature_seats_in_use", row[2]),
                ("tandem_feature_seats_reserved", row[3]), ("tandem_feature_seats_available", row[4])
            ]
            for (name, value) in want {
                let expected = Double(value.uint64Value ?? 0)
                #expect(s[name + l] == expected, "\(name)\(l): \(s[name + l] ?? -1), GetUsage \(value)")
            }
            // A fresh server: the denials by reason add up to GetUsage's denied.
            let denials = ["insufficient-seats", "reserved-for-others"].map {
                s["tandem_feature_denials_total{feature=\"\(feature)\",reason=\"\($0)\"}"] ?? -1
            }
            #expect(denials.reduce(0, +) == Double(row[5].uint64Value ?? 99), "\(denials) vs \(row[5])")
        }
        #expect(s["tandem_feature_seats_in_use{feature=\"cad\"}"] == 3)
        #expect(s["tandem_feature_denials_total{feature=\"cad\",reason=\"insufficient-seats\"}"] == 1)
        #expect(s["tandem_feature_denials_total{feature=\"cad\",reason=\"reserved-for-others\"}"] == 1)
        #expect(s["tandem_unknown_feature_denials_total"] == 1)
        #expect(s["tandem_feature_acquisitions_total{feature=\"cad\"}"] == 2)
        // Requests by API, method and result; commits timed.
        #expect(s["tandem_requests_total{api=\"dbus\",method=\"Acquire\",result=\"InsufficientSeats\"}"] == 2)
        #expect(s["tandem_requests_total{api=\"dbus\",method=\"Acquire\",result=\"UnknownFeature\"}"] == 1)
        #expect(s["tandem_requests_total{api=\"dbus\",method=\"Acquire\",result=\"ok\"}"] == 1)
        let posts = s.filter { $0.key.hasPrefix("tandem_requests_total{api=\"http\",method=\"POST /v1/leases") }
        #expect(posts.values.reduce(0, +) == 1, "\(posts)")
        #expect(!scrape.body.contains("PROPFIND") && !scrape.body.contains("MKCOL"))
        let other = s.filter { $0.key.hasPrefix("tandem_requests_total{api=\"http\",method=\"other ") }
        #expect(other.values.reduce(0, +) == 2, "\(other)")
        #expect((s["tandem_commit_duration_seconds_count"] ?? 0) >= 3, "\(scrape.body.prefix(3000))")
        #expect((s["tandem_request_duration_seconds_count{api=\"dbus\",method=\"Acquire\"}"] ?? 0) == 4)
        #expect(s["tandem_license_seats{license=\"LIC-CAD\",feature=\"cad\"}"] == 5)
        // The pair's properties: standalone, unpaired, serving.
        #expect(s["tandem_pair_status{status=\"unpaired\"}"] == 1)
        #expect(s["tandem_pair_status{status=\"paired-and-available\"}"] == 0)
        #expect(s["tandem_role{role=\"standalone\"}"] == 1)
        #expect(s["tandem_serving"] == (try c.get("Serving") == .bool(true) ? 1 : 0))
        #expect(s["tandem_epoch"] == Double(try c.get("Epoch").uint64Value ?? 99))
        #expect(scrape.body.contains("tandem_build_info{"))
    }

    /// In a pair: each node's scrape says what its pair properties say, and the standby counts
    /// the acquisitions it replicated.
    @Test func bothNodesOfAPairAgreeWithTheirProperties() throws {
        let f = try PairFixture().formed()
        let ca = try f.a.client(), cb = try f.b.client()
        _ = try ca.call("Acquire", [.string("cad"), .uint32(1), .string("ws-1"), .vardict([])])
        try waitFor("the backup holds the lease", seconds: 10) { try leaseIds(cb).count == 1 }
        for (name, node, client) in [("primary", f.a, ca), ("backup", f.b, cb)] {
            let s = samples(try http("GET", "http://" + (try node.httpAddress) + "/metrics", contentType: nil).body)
            let status = try client.get("PairStatus").stringValue ?? ""
            #expect(s["tandem_pair_status{status=\"\(status)\"}"] == 1, "\(name): \(status)")
            #expect(s["tandem_role{role=\"\(name)\"}"] == 1, "\(name)")
            #expect(s["tandem_serving"] == (try client.get("Serving") == .bool(true) ? 1 : 0), "\(name)")
            #expect(s["tandem_epoch"] == Double(try client.get("Epoch").uint64Value ?? 99), "\(name)")
            let peer = try client.get("PeerStatus").stringValue ?? ""
            #expect(s["tandem_peer_status{status=\"\(peer)\"}"] == 1 && s["tandem_peer_up"] == 1, "\(name): \(peer)")
            #expect(s["tandem_witness_up"] == 1, "\(name)")
            #expect(s["tandem_feature_acquisitions_total{feature=\"cad\"}"] == 1, "\(name)")
        }
        let primary = samples(try http("GET", "http://" + (try f.a.httpAddress) + "/metrics", contentType: nil).body)
        #expect(primary["tandem_replication_lag_entries"] == 0)
        // The backup restarts (its pair restored from the store, the lease with it) and then
        // replicates the lease's release: counted, though it never saw the lease granted.
        let lease = try leaseIds(ca).first ?? ""
        _ = f.b.stop(SIGTERM)
        try f.b.start()
        let cb2 = try f.b.client()
        try waitFor("paired again", seconds: 10) { try cb2.get("PairStatus") == .string("paired-and-available") }
        _ = try ca.call("Release", [.string(lease)])
        try waitFor("the backup released it", seconds: 10) { try leaseIds(cb2).isEmpty }
        let backup = samples(try http("GET", "http://" + (try f.b.httpAddress) + "/metrics", contentType: nil).body)
        #expect(backup["tandem_feature_releases_total{feature=\"cad\"}"] == 1, "\(backup)")
    }

    /// With ClientTokenFile=, a scrape needs a token, as /v1 does.
    @Test func aScrapeNeedsATokenWhenTokensAreConfigured() throws {
        let dir = makeTempDir("metrics-token")
        let tokens = dir + "/tokens"
        try "prometheus 0123456789abcdef0123456789abcdef\n".write(toFile: tokens, atomically: true, encoding: .utf8)
        chmod(tokens, 0o600)
        let f = try Fixture(activate: false, extraConfig: "ClientTokenFile=\(tokens)\n")
        let base = "http://" + (try f.daemon.httpAddress)
        #expect(try http("GET", base + "/metrics", contentType: nil).status == 401)
        let scrape = try http("GET", base + "/metrics", token: "0123456789abcdef0123456789abcdef", contentType: nil)
        #expect(scrape.status == 200)
        #expect(scrape.body.contains("tandem_pair_status{status=\"unpaired\"} 1"), "\(scrape.body)")
    }
}

/// The shipped alert rules (packaging/prometheus): promtool accepts them and their unit tests
/// pass (each alert fires when it should and not before).
@Suite struct AlertRules {
    @Test func promtoolChecksAndTestsTheShippedRules() throws {
        guard FileManager.default.isExecutableFile(atPath: MetricsEndpoint.promtool) else {
            Issue.record("promtool is not installed (apt-get install prometheus)")
            return
        }
        let dir = packageRoot + "/packaging/prometheus"
        let check = try run(MetricsEndpoint.promtool, ["check", "rules", dir + "/tandem.rules.yml"])
        #expect(check.status == 0 && check.stdout.contains("SUCCESS: 7 rules found"), "\(check.stdout)\(check.stderr)")
        let test = try run(
            "/bin/sh", ["-c", "cd \(dir) && \(MetricsEndpoint.promtool) test rules tandem.rules.test.yml"])
        #expect(test.status == 0, "\(test.stdout)\(test.stderr)")
    }
}
