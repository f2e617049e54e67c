import Foundation
import TandemBusClient
import TandemCore
import TandemTesting
import Testing

/// Borrowing (issue 13) with a real tandemd and `tandemctl client`: a borrow allowed by the
/// policy's `Borrow=`, counted in use and shown to administrators; its certificate verifies
/// offline on this machine and not on another (the same file, with another /etc/machine-id bind-
/// mounted in a mount namespace of its own); `client run` uses it with no server; revoked, its
/// seats stay counted; returned early, they are free; a short borrow expires on time.
@Suite(.serialized) struct BorrowingInTandemd {
    static let policy = "[Feature cad]\nBorrow=2\n"

    /// A client configuration written by `client configure`, keeping certificates in a directory
    /// of the test's own.
    static func configure(_ server: String, enableBackup: Bool = false) throws -> (config: String, store: String) {
        let dir = makeTempDir("borrower")
        let config = dir + "/client.conf"
        let r = try clientctl(config, ["configure", "--server", server] + (enableBackup ? ["--enable-backup"] : []))
        guard r.status == 0 else { throw TestFailure("client configure: \(r.stderr)") }
        let text = try String(contentsOfFile: config, encoding: .utf8)
        try (text + "BorrowDirectory=\(dir)/borrowed\n").write(toFile: config, atomically: true, encoding: .utf8)
        return (config, dir + "/borrowed")
    }

    /// `tandemctl client check` as another machine would run it: /etc/machine-id replaced, for
    /// this process only, by a bind mount in a new mount namespace.
    static func checkOnAnotherMachine(_ config: String, _ feature: String) throws -> RunResult {
        let other = makeTempDir("other-machine") + "/machine-id"
        try "0123456789abcdef0123456789abcdef\n".write(toFile: other, atomically: true, encoding: .utf8)
        return try run(
            "/usr/bin/unshare",
            [
                "--mount", "--propagation", "private", "--", "/bin/sh", "-c",
                "mount --bind \"$1\" /etc/machine-id && exec \"$2\" client check \"$3\" --config \"$4\"", "sh", other,
                binary("tandemctl"), feature, config
            ])
    }

    static func thisMachine() throws -> String {
        try String(contentsOfFile: "/etc/machine-id", encoding: .utf8).trimmingCharacters(in: .whitespacesAndNewlines)
    }

    @Test func borrowCheckRunRevokeReturnAndExpire() throws {
        let file = makeTempDir("borrow-policy") + "/policy.conf"
        try Self.policy.write(toFile: file, atomically: true, encoding: .utf8)
        let f = try Fixture(extraConfig: "Policy=\(file)\n")
        let c = try f.bus.client()
        let base = "http://" + (try f.daemon.httpAddress)
        let (config, store) = try Self.configure(try f.daemon.httpAddress)
        // configure kept the server's borrow key.
        let key = try c.get("BorrowKey").stringValue ?? ""
        let written = try String(contentsOfFile: config, encoding: .utf8)
        #expect(key.hasPrefix("ed25519 ") && written.contains("BorrowKey=\(key)\n"), "\(written)")

        // Longer than Borrow= allows: PolicyDenied, a denial with its reason.
        let long = try clientctl(config, ["borrow", "cad", "--days", "3"])
        #expect(long.status != 0 && long.stderr.contains("PolicyDenied") && long.stderr.contains("Borrow=2"))
        let borrowed = try clientctl(
            config, ["borrow", "cad", "--count", "2", "--days", "1.5", "--client", "laptop-7", "--json"])
        #expect(borrowed.status == 0, "\(borrowed.stderr)")
        let cert = try String(contentsOfFile: store + "/cad.borrow", encoding: .utf8)
        #expect(cert.contains("Machine-Id: \(try Self.thisMachine())\n") && cert.contains("Seats: 2\n"))
        // Counted in use, listed for administrators, in the metrics.
        let usage = try UsageRow.rows(c.call("GetUsage"))
        #expect(usage.first?.inUse == 2, "\(usage)")
        let borrows = try BorrowRow.rows(c.call("ListBorrows"))
        let machine = try Self.thisMachine()
        #expect(borrows.count == 1 && borrows[0].machineId == machine && borrows[0].revokedUSec == 0)
        let length = Double(borrows[0].expiresUSec - borrows[0].acquiredUSec) / 1e6
        #expect(abs(length - 1.5 * 86_400) < 1, "\(length)")
        let scrape = samples(try http("GET", base + "/metrics", contentType: nil).body)
        #expect(scrape[#"tandem_feature_seats_borrowed{feature="cad"}"#] == 2)
        #expect(scrape[#"tandem_feature_denials_total{feature="cad",reason="policy-borrow"}"#] == 1)
        // A second borrow of the feature on this machine is refused here, before any server.
        let twice = try clientctl(config, ["borrow", "cad", "--days", "1"])
        #expect(twice.status != 0 && twice.stderr.contains("already borrowed"), "\(twice.stderr)")
        // A borrow is not renewed.
        let renew = try http("POST", base + "/v1/leases/\(borrows[0].leaseId)/renew")
        #expect(renew.status == 400 && renew.body.contains("not renewed"), "\(renew.body)")

        // Offline checks: valid here, not on another machine, and `client run` runs with no
        // server at all (the configuration pointed at a closed port).
        let here = try clientctl(config, ["check", "cad"])
        #expect(here.status == 0 && here.stdout.contains("2 seat(s) borrowed until"), "\(here.stderr)")
        let there = try Self.checkOnAnotherMachine(config, "cad")
        #expect(there.status == 1 && there.stderr.contains("borrowed for machine"), "\(there.stderr)")
        let offline = makeTempDir("offline") + "/client.conf"
        try (try String(contentsOfFile: config, encoding: .utf8))
            .replacingOccurrences(of: "Server=\(try f.daemon.httpAddress)", with: "Server=127.0.0.1:1")
            .write(toFile: offline, atomically: true, encoding: .utf8)
        let ran = try clientctl(offline, ["run", "--feature", "cad", "--count", "2", "--", "/bin/sh", "-c", "exit 7"])
        #expect(ran.status == 7, "\(ran.stderr)")
        // A certificate that was altered does not verify.
        try cert.replacingOccurrences(of: "Seats: 2", with: "Seats: 3")
            .write(toFile: store + "/cad.borrow", atomically: true, encoding: .utf8)
        let altered = try clientctl(config, ["check", "cad"])
        #expect(altered.status == 1 && altered.stderr.contains("altered"), "\(altered.stderr)")
        try cert.write(toFile: store + "/cad.borrow", atomically: true, encoding: .utf8)

        // Revoked: marked, audited, still counted; an administrator's release is refused.
        let revoke = try tandemctl(f.bus, ["revoke-borrow", borrows[0].leaseId])
        #expect(revoke.status == 0, "\(revoke.stderr)")
        expectBusError("org.freedesktop.DBus.Error.InvalidArgs") {
            _ = try c.call("Release", [.string(borrows[0].leaseId)])
        }
        let listed = try tandemctl(f.bus, ["borrows", "--json"]).stdout
        let rows = try JSONSerialization.jsonObject(with: Data(listed.utf8)) as? [[String: Any]]
        #expect((rows?.first?["revoked_usec"] as? Int ?? 0) > 0, "\(listed)")
        #expect(try UsageRow.rows(c.call("GetUsage")).first?.inUse == 2)
        // Asked again (the same request id, as a lost answer would be), a revoked borrow gets no
        // new certificate.
        let retry = try http(
            "POST", base + "/v1/borrows",
            body: #"{"feature":"cad","count":2,"client":"laptop-7","borrow_sec":129600,"machine_id":"\#(machine)","#
                + #""request_id":"borrow-\#(machine)-cad"}"#)
        #expect(retry.status == 403 && retry.body.contains("revoked"), "\(retry.body)")
        let audit = try tandemctl(f.bus, ["audit", "--json"])
        #expect(audit.stdout.contains("RevokeBorrow"), "\(audit.stdout.suffix(500))")

        // Returned early: the seats are free, the certificate is gone, the session is in the history.
        let returned = try clientctl(config, ["return", "cad"])
        #expect(returned.status == 0, "\(returned.stderr)")
        #expect(try UsageRow.rows(c.call("GetUsage")).first?.inUse == 0)
        #expect(!FileManager.default.fileExists(atPath: store + "/cad.borrow"))
        let sessions = try http("GET", base + "/v1/sessions?feature=cad")
        #expect(sessions.body.contains("\"machine_id\":\"\(try Self.thisMachine())\""), "\(sessions.body)")
        #expect(sessions.body.contains("\"ended\":\"released\""), "\(sessions.body)")

        // A short borrow ends on time, here and on the server.
        let short = try clientctl(config, ["borrow", "cad", "--days", "0.00004", "--json"])  // 3 s
        #expect(short.status == 0, "\(short.stderr)")
        let expires = try #require(BorrowRow.rows(c.call("ListBorrows")).first?.expiresUSec)
        #expect(try clientctl(config, ["check", "cad"]).status == 0)
        try waitFor("the borrow to end on the server", seconds: 10) {
            try BorrowRow.rows(c.call("ListBorrows")).isEmpty
        }
        let late = UInt64(Date().timeIntervalSince1970 * 1e6) - expires
        #expect(late < 1_500_000, "ended \(late) µs after its expiry")
        let ended = try clientctl(config, ["check", "cad"])
        #expect(ended.status == 1 && ended.stderr.contains("the borrow ended at"), "\(ended.stderr)")
        #expect(try UsageRow.rows(c.call("GetUsage")).first?.inUse == 0)
    }

    /// Bad input: a clear refusal each, nothing taken.
    @Test func badBorrowsAreRefused() throws {
        let file = makeTempDir("borrow-policy") + "/policy.conf"
        try Self.policy.write(toFile: file, atomically: true, encoding: .utf8)
        let f = try Fixture(extraConfig: "Policy=\(file)\n")
        let base = "http://" + (try f.daemon.httpAddress) + "/v1/borrows"
        let m = try Self.thisMachine()
        for (body, what) in [
            (#"{"feature":"cad","client":"c","borrow_sec":60}"#, "'machine_id' is required"),
            (#"{"feature":"cad","client":"c","borrow_sec":60,"machine_id":"x"}"#, "machine_id must be 32"),
            (#"{"feature":"cad","client":"c","borrow_sec":0,"machine_id":"\#(m)"}"#, "'borrow_sec' must be"),
            (#"{"feature":"cad","client":"c","borrow_sec":60,"machine_id":"\#(m)","ttl_sec":5}"#, "unknown field")
        ] {
            let r = try http("POST", base, body: body)
            #expect(r.status == 400 && r.body.contains(what), "\(body): \(r.body)")
        }
        let cam = try http("POST", base, body: #"{"feature":"cam","client":"c","borrow_sec":60,"machine_id":"\#(m)"}"#)
        #expect(cam.status == 404, "no license for cam: \(cam.body)")
        #expect(try UsageRow.rows(f.bus.client().call("GetUsage")).first?.inUse == 0)
        let config = makeTempDir("noborrowkey") + "/client.conf"
        try "[Client]\nServer=\(try f.daemon.httpAddress)\n".write(toFile: config, atomically: true, encoding: .utf8)
        let noKey = try clientctl(config, ["borrow", "cad", "--days", "1"])
        #expect(noKey.status == 1 && noKey.stderr.contains("no BorrowKey="), "\(noKey.stderr)")
        // A key in a file others may change is not trusted: they could sign their own borrows.
        let (loose, _) = try Self.configure(try f.daemon.httpAddress)
        chmod(loose, 0o666)
        let untrusted = try clientctl(loose, ["check", "cad"])
        #expect(untrusted.status == 1 && untrusted.stderr.contains("owned by root"), "\(untrusted.stderr)")
    }
}

/// A borrow survives a failover: the backup holds and counts it, signs with the same key, and
/// takes its return.
@Suite(.serialized) struct BorrowingThroughAFailover {
    @Test func theBackupHoldsTheBorrowAndTakesItsReturn() throws {
        let file = makeTempDir("borrow-policy") + "/policy.conf"
        try BorrowingInTandemd.policy.write(toFile: file, atomically: true, encoding: .utf8)
        let p = try PairFixture(extra: "[Server]\nPolicy=\(file)\n").formed(seats: 3)
        let ca = try p.a.client(), cb = try p.b.client()
        #expect(try ca.get("BorrowKey") == cb.get("BorrowKey"), "one key for the pair")
        let (config, _) = try BorrowingInTandemd.configure(try p.a.httpAddress, enableBackup: true)
        let (later, _) = try BorrowingInTandemd.configure(try p.a.httpAddress, enableBackup: true)
        #expect((try String(contentsOfFile: config, encoding: .utf8)).contains("Backup="))
        let borrowed = try clientctl(config, ["borrow", "cad", "--days", "2"])
        #expect(borrowed.status == 0, "\(borrowed.stderr)")
        let lease = try #require(BorrowRow.rows(ca.call("ListBorrows")).first)
        try waitFor("the backup to hold the borrow", seconds: 10) {
            try BorrowRow.rows(cb.call("ListBorrows")) == [lease]
        }
        _ = p.a.stop(SIGKILL)
        try waitFor("the backup to serve", seconds: 20) { try cb.get("Serving") == .bool(true) }
        #expect(try BorrowRow.rows(cb.call("ListBorrows")) == [lease])
        #expect(try UsageRow.rows(cb.call("GetUsage")).first?.inUse == 1)
        #expect(try clientctl(config, ["check", "cad"]).status == 0)
        // A borrow the backup signs verifies with the key learnt from the primary.
        let fromBackup = try clientctl(
            later, ["borrow", "cad", "--days", "1", "--client", "laptop-8", "--failover-wait", "20"])
        #expect(fromBackup.status == 0, "\(fromBackup.stderr)")
        #expect(try clientctl(later, ["check", "cad"]).status == 0)
        #expect(try BorrowRow.rows(cb.call("ListBorrows")).count == 2)
        #expect(try clientctl(later, ["return", "cad"]).status == 0)
        let returned = try clientctl(config, ["return", "cad", "--failover-wait", "20"])
        #expect(returned.status == 0, "\(returned.stderr)")
        #expect(try BorrowRow.rows(cb.call("ListBorrows")).isEmpty)
        #expect(try UsageRow.rows(cb.call("GetUsage")).first?.inUse == 0)
    }
}
