import Foundation
import TandemBusClient
import TandemCore
import TandemTesting
import Testing

/// The audit trail as `tandemctl audit --json` prints it.
func auditRecords(_ bus: TestBus, _ extra: [String] = []) throws -> [[String: Any]] {
    let r = try tandemctl(bus, ["audit", "--json"] + extra)
    guard r.status == 0 else { throw TestFailure("tandemctl audit failed: \(r.stderr)") }
    return try JSONSerialization.jsonObject(with: Data(r.stdout.utf8)) as? [[String: Any]] ?? []
}

@Suite(.serialized) struct AuditTrail {
    /// Done and refused administrative actions are recorded with who, how, what and the result;
    /// a flood of refusals by one caller is kept once; the trail is for administrators only,
    /// survives a restart, and every record is a journal message with the audit MESSAGE_ID.
    @Test func administrativeActionsAreRecordedDoneAndRefused() throws {
        let f = try Fixture()  // activates LIC-CAD as root
        let c = try f.bus.client()
        // A non-administrator tries, twice in a row, and once something else.
        for _ in 0..<2 {
            #expect(try managerCall(f.bus, "DeactivateLicense", ["s", "LIC-CAD"], uid: nobody).status != 0)
        }
        #expect(try managerCall(f.bus, "Reserve", ["sus", "cad", "2", "ws-9"], uid: nobody).status != 0)
        // A refused call's text is kept short and escaped (a record travels in a pair frame).
        let long = "x\u{1B}[2J" + String(repeating: "y", count: 60_000)
        #expect(try managerCall(f.bus, "Unreserve", ["s", long], uid: nobody).status != 0)
        // Root reserves and revokes a lease nobody holds.
        let reservation = try c.call("Reserve", [.string("cad"), .uint32(1), .string("ws-1")]).first?.stringValue ?? ""
        let acquired = try managerCall(f.bus, "Acquire", ["susa{sv}", "cad", "1", "ws-2", "0"], uid: nobody)
        let lease = acquired.stdout.split(separator: "\"").dropFirst().first.map(String.init) ?? ""
        _ = try c.call("Release", [.string(lease)])
        f.daemon.signal(SIGHUP)
        try waitFor("the reload's record", seconds: 10) {
            try auditRecords(f.bus).contains { $0["action"] as? String == "Reload" }
        }

        let records = try auditRecords(f.bus)
        let actions = records.map { "\($0["action"] ?? "") \($0["result"] ?? "")" }
        #expect(
            actions == [
                "ActivateLicense ok", "DeactivateLicense AccessDenied", "Reserve AccessDenied",
                "Unreserve AccessDenied", "Reserve ok",
                "RevokeLease ok", "Reload ok"
            ], "\(actions)")
        let refused = records.first { $0["action"] as? String == "DeactivateLicense" } ?? [:]
        #expect(refused["uid"] as? Int == nobody && refused["user"] as? String == "nobody", "\(refused)")
        #expect(refused["via"] as? String == "dbus" && refused["server_id"] as? String == f.serverId)
        #expect((refused["arguments"] as? [String: String])?["license_id"] == "LIC-CAD", "\(refused)")
        #expect((refused["detail"] as? String)?.contains("admin group") == true, "\(refused)")
        let cut =
            (records.first { $0["action"] as? String == "Unreserve" }?["arguments"] as? [String: String])?[
                "reservation_id"] ?? ""
        #expect(cut.utf8.count < 300 && cut.hasSuffix("(60005 bytes)") && !cut.contains("\u{1B}"), "\(cut.prefix(300))")
        let activated = records.first ?? [:]
        #expect(activated["uid"] as? Int == 0 && activated["user"] as? String == "root")
        #expect((activated["arguments"] as? [String: String])?["seats"] != nil, "\(activated)")
        let reserved = records.first { $0["action"] as? String == "Reserve" && $0["result"] as? String == "ok" }
        #expect((reserved?["arguments"] as? [String: String])?["reservation_id"] == reservation, "\(reserved ?? [:])")
        let revoked = records.first { $0["action"] as? String == "RevokeLease" }
        #expect((revoked?["arguments"] as? [String: String])?["holder"] == "uid \(nobody)", "\(revoked ?? [:])")
        let reload = records.last ?? [:]
        #expect(reload["via"] as? String == "signal" && reload["uid"] == nil, "\(reload)")
        // The license is still active: the refusals changed nothing.
        #expect(try c.call("ListLicenses").first?.arrayValue?.count == 1)

        // Administrators only; a bad --since is one line and a non-zero exit.
        #expect(try managerCall(f.bus, "ListAudit", ["tu", "0", "0"], uid: nobody).stderr.contains("Access denied"))
        let bad = try tandemctl(f.bus, ["audit", "--since", "yesterday-ish"])
        #expect(bad.status != 0 && bad.stderr.split(separator: "\n").count == 1, "\(bad.stderr)")
        #expect(try auditRecords(f.bus, ["--since", "2999-01-01"]).isEmpty)
        #expect(try auditRecords(f.bus, ["--since", "1h"]).count == records.count)
        #expect(try auditRecords(f.bus, ["--limit", "2"]).map { $0["action"] as? String } == ["RevokeLease", "Reload"])
        let table = try tandemctl(f.bus, ["audit"])
        #expect(
            table.stdout.contains("nobody (\(nobody))") && table.stdout.contains("license_id=LIC-CAD"),
            "\(table.stdout)")
        #expect(!table.stdout.unicodeScalars.contains("\u{1B}"), "a caller's escape sequence reached the terminal")

        // Each record is a journal message with the audit MESSAGE_ID (the fields as key=value
        // on stderr outside the journal).
        let lines = f.daemon.log().split(separator: "\n").filter { $0.contains("message_id=\(AuditRecord.messageId)") }
        #expect(lines.count == records.count, "\(lines)")
        #expect(lines.contains { $0.contains("audit_user=nobody") && $0.contains("audit_result=AccessDenied") })

        // Durable.
        #expect(f.daemon.stop() == 0)
        try f.daemon.start()
        #expect(try auditRecords(f.bus).map { $0["id"] as? String } == records.map { $0["id"] as? String })
    }

    /// Over the network API, a refused attempt on another token's lease is recorded with the
    /// token's name.
    @Test func anotherTokensAttemptIsRecordedWithItsName() throws {
        let t = try TokenFixture("farm farm-secret\nrender render-secret\n")
        let (f, base) = (t.fixture, t.base)
        let taken = try http(
            "POST", base + "/v1/leases", body: #"{"feature":"cad","client":"ws"}"#, token: "farm-secret")
        let id = taken.object["lease_id"] as? String ?? ""
        #expect(try http("DELETE", base + "/v1/leases/\(id)", token: "render-secret").status == 403)
        let record = try auditRecords(f.bus).first { $0["action"] as? String == "Release" } ?? [:]
        #expect(record["via"] as? String == "http" && record["token"] as? String == "render", "\(record)")
        #expect(record["result"] as? String == "AccessDenied" && record["uid"] == nil, "\(record)")
        #expect((record["arguments"] as? [String: String])?["lease_id"] == id, "\(record)")
    }
}
