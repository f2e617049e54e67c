import Foundation
import TandemBusClient
import TandemCore
import TandemTesting
import Testing

/// The usage policy (issue 13) in a real tandemd: each rule refuses over D-Bus and HTTP with
/// PolicyDenied and its place, the refusals are denials with their reasons in the history and the
/// metrics, a reload changes the outcome (a broken file on reload keeps the one before), and a
/// broken file at start keeps tandemd from starting.
@Suite(.serialized) struct UsagePolicyInTandemd {
    static let policy = """
        [Group eng]
        Users=alice bob
        [Feature cad]
        Reserve=2 group:eng
        Max=2 user:*
        Exclude=user:mallory

        """

    /// Acquires one seat of cad over D-Bus as `user`: the lease id, or the error's name and message.
    static func acquire(_ c: BusClient, user: String, count: UInt32 = 1) -> Result<String, BusError> {
        do {
            let r = try c.call(
                "Acquire", [.string("cad"), .uint32(count), .string("ws-\(user)"), .vardict([("user", .string(user))])])
            return .success(r.first?.stringValue ?? "")
        } catch {
            return .failure(error)
        }
    }

    static func refusal(_ r: Result<String, BusError>) -> String {
        if case .failure(let e) = r { return "\(e.name): \(e.message)" }
        return "granted"
    }

    @Test func rulesRefuseWithTheirPlaceAndAReloadChangesTheOutcome() throws {
        let dir = makeTempDir("policy")
        let file = dir + "/policy.conf"
        try Self.policy.write(toFile: file, atomically: true, encoding: .utf8)
        let f = try Fixture(extraConfig: "Policy=\(file)\n")
        let c = try f.bus.client()
        let base = "http://" + (try f.daemon.httpAddress)
        let denied = "org.tandem.LicenseManager1.PolicyDenied: feature 'cad': "

        // Exclude, Max and Reserve over D-Bus (5 seats: eve 2, dan 1, the last 2 kept for eng).
        #expect(Self.refusal(Self.acquire(c, user: "mallory")).hasPrefix(denied + "user 'mallory'"))
        #expect(Self.refusal(Self.acquire(c, user: "mallory")).hasSuffix("(policy.conf:6: Exclude=user:mallory)"))
        #expect(Self.refusal(Self.acquire(c, user: "eve", count: 2)) == "granted")
        let max = Self.refusal(Self.acquire(c, user: "eve"))
        #expect(max.hasPrefix(denied + "user 'eve' holds 2 seat(s)") && max.contains("policy.conf:5: Max=2 user:*"))
        let dan = try Self.acquire(c, user: "dan").get()
        // The seats the policy keeps for eng count as reserved, not available, in every view.
        let usage = try UsageRow.rows(c.call("GetUsage")).first
        #expect(usage?.inUse == 3 && usage?.reserved == 2 && usage?.available == 0, "\(String(describing: usage))")
        let features = try http("GET", base + "/v1/features").body
        #expect(features.contains(#""reserved":2"#) && features.contains(#""available":0"#), "\(features)")
        let reserved = Self.refusal(Self.acquire(c, user: "frank"))
        #expect(reserved.hasPrefix(denied) && reserved.contains("policy.conf:4: Reserve=2 group:eng"), "\(reserved)")
        // The same rules over HTTP: a 403 problem named PolicyDenied; eng's reserved seats are eng's.
        let web = try http("POST", base + "/v1/leases", body: #"{"feature":"cad","client":"web","user":"mallory"}"#)
        #expect(web.status == 403 && web.object["type"] as? String == "urn:tandem:problem:PolicyDenied", "\(web.body)")
        #expect((web.object["detail"] as? String)?.contains("Exclude=user:mallory") == true)
        let alice = try http("POST", base + "/v1/leases", body: #"{"feature":"cad","client":"web","user":"alice"}"#)
        #expect(alice.status == 201, "\(alice.body)")

        // Each refusal is a denial with its reason, in the history and the metrics.
        let reasons = try DenialRow.rows(
            c.call("ListDenials", [.uint64(0), .uint64(UInt64(Int64.max)), .vardict([])])
        ).map(\.reason)
        #expect(reasons == ["policy-excluded", "policy-excluded", "policy-max", "policy-reserved", "policy-excluded"])
        let metrics = samples(try http("GET", base + "/metrics", contentType: nil).body)
        func denials(_ reason: String) -> Double? {
            metrics.first { $0.key.hasPrefix("tandem_feature_denials_total{") && $0.key.contains("\"\(reason)\"") }?
                .value
        }
        #expect(denials("policy-excluded") == 3 && denials("policy-max") == 1 && denials("policy-reserved") == 1)
        #expect(denials("insufficient-seats") == 0)

        // A broken policy on reload is refused with its place; the one before stays.
        try (Self.policy + "Max=lots user:*\n").write(toFile: file, atomically: true, encoding: .utf8)
        f.daemon.signal(SIGHUP)
        try waitFor("the refused reload", seconds: 10) {
            try auditRecords(f.bus).contains { $0["action"] as? String == "Reload" }
        }
        let refusedReload = try auditRecords(f.bus).last { $0["action"] as? String == "Reload" } ?? [:]
        #expect(
            (refusedReload["detail"] as? String)?.contains("policy.conf:7: Max= takes a seat count") == true,
            "\(refusedReload)")
        #expect(Self.refusal(Self.acquire(c, user: "mallory")).hasPrefix(denied), "the previous policy holds")
        // Without the Exclude, mallory may use the feature (a seat that is not eng's: dan's).
        _ = try c.call("Release", [.string(dan)])
        try Self.policy.replacingOccurrences(of: "Exclude=user:mallory\n", with: "")
            .write(toFile: file, atomically: true, encoding: .utf8)
        f.daemon.signal(SIGHUP)
        try waitFor("the second reload", seconds: 10) {
            try auditRecords(f.bus).filter { $0["action"] as? String == "Reload" }.count == 2
        }
        #expect(Self.refusal(Self.acquire(c, user: "mallory")) == "granted")
    }

    @Test func aBrokenPolicyKeepsTandemdFromStarting() throws {
        let dir = makeTempDir("policy")
        try "[Feature cad]\nInclude=group:no-such-group-here\n".write(
            toFile: dir + "/policy.conf", atomically: true, encoding: .utf8)
        let vendor = try Vendor()
        let daemon = try Tandemd(
            bus: try TestBus(), config: "[Server]\nVendorKeys=\(vendor.keysDir)\nPolicy=\(dir)/policy.conf\n")
        #expect(throws: TestFailure.self) { try daemon.start() }
        #expect(daemon.log().contains("policy.conf:2: no [Group no-such-group-here]"), "\(daemon.log())")
        // tandemctl policy check says the same and exits non-zero; a good file passes.
        let check = try run(binary("tandemctl"), ["policy", "check", dir + "/policy.conf"])
        #expect(check.status != 0 && check.stderr.contains("policy.conf:2: no [Group no-such-group-here]"))
        try Self.policy.write(toFile: dir + "/policy.conf", atomically: true, encoding: .utf8)
        let good = try run(binary("tandemctl"), ["policy", "check", dir + "/policy.conf"])
        #expect(good.status == 0 && good.stdout.contains("valid; 1 feature(s), 3 rule(s)"), "\(good.stdout)")
        let explain = try run(
            binary("tandemctl"), ["policy", "explain", "cad", "--user", "mallory", "--policy", dir + "/policy.conf"])
        #expect(explain.stdout.contains("refused (PolicyDenied): excluded"), "\(explain.stdout)")
    }
}

/// Both nodes of a real pair must hold the same policy (issue 13): a backup reloaded with another
/// one is shown on both nodes (PolicyMismatch, tandemctl status, /metrics), administrative changes
/// are refused with PairState meanwhile, seats are still granted, and making them the same again
/// lifts it.
@Suite(.serialized) struct UsagePolicyInAPair {
    @Test func aMismatchIsShownOnBothNodesAndHoldsAdministrativeChanges() throws {
        let dir = makeTempDir("pairpolicy")
        try UsagePolicyInTandemd.policy.write(toFile: dir + "/same.conf", atomically: true, encoding: .utf8)
        try (UsagePolicyInTandemd.policy + "MaxLeaseSec=60\n").write(
            toFile: dir + "/other.conf", atomically: true, encoding: .utf8)
        let p = try PairFixture(extra: "[Server]\nPolicy=\(dir)/same.conf\n").formed()
        let ca = try p.a.client(), cb = try p.b.client()
        let digest = try ca.get("PolicyDigest").stringValue ?? ""
        let backupDigest = try cb.get("PolicyDigest")
        #expect(digest.count == 64 && backupDigest == .string(digest))
        #expect(try ca.get("PolicyMismatch") == .bool(false) && cb.get("PolicyMismatch") == .bool(false))

        // The backup is reloaded with another policy.
        try FileManager.default.removeItem(atPath: p.b.configPath)
        let config = pairConfig(
            vendor: p.vendor, keyFile: p.keyFile, link: "127.0.0.1:\(p.ports.1)", witness: "127.0.0.1:\(p.ports.2)",
            extra: "HeartbeatSec=0.2\nFailoverTimeoutSec=1\n[Server]\nPolicy=\(dir)/other.conf\n")
        try config.write(toFile: p.b.configPath, atomically: true, encoding: .utf8)
        p.b.signal(SIGHUP)
        try waitFor("both nodes to see the mismatch", seconds: 10) {
            try ca.get("PolicyMismatch") == .bool(true) && cb.get("PolicyMismatch") == .bool(true)
        }
        #expect(try cb.get("PolicyDigest") != .string(digest))
        expectBusError("org.tandem.LicenseManager1.PairState") {
            _ = try ca.call("Reserve", [.string("cad"), .uint32(1), .string("ws-9")])
        }
        let status = try tandemctl(p.busA, ["status"])
        #expect(status.stdout.contains("DIFFERS from the peer's"), "\(status.stdout)")
        let scrape = samples(try http("GET", "http://" + (try p.a.httpAddress) + "/metrics", contentType: nil).body)
        #expect(scrape["tandem_pair_policy_mismatch"] == 1, "\(scrape.filter { $0.key.contains("policy") })")
        // Products still get seats.
        _ = try ca.call("Acquire", [.string("cad"), .uint32(1), .string("ws-1"), .vardict([])])
        #expect(try leaseIds(ca).count == 1)

        // The same policy again: the mismatch clears on both and the reservation goes through.
        try config.replacingOccurrences(of: "other.conf", with: "same.conf")
            .write(toFile: p.b.configPath, atomically: true, encoding: .utf8)
        p.b.signal(SIGHUP)
        try waitFor("the pair to agree again", seconds: 10) {
            try ca.get("PolicyMismatch") == .bool(false) && cb.get("PolicyMismatch") == .bool(false)
        }
        #expect(try ca.call("Reserve", [.string("cad"), .uint32(1), .string("ws-9")]).count == 1)
    }
}
