import Foundation
import TandemBusClient
import TandemCore
import TandemTesting
import Testing

/// polkitd on a test bus, with the packaged actions and rules and a test rule installed where
/// polkitd reads them (it has no other directories): removed again when the test ends.
final class Polkitd {
    static let daemon = "/usr/lib/polkit-1/polkitd"
    static let actionFile = "/usr/share/polkit-1/actions/org.tandem.LicenseManager1.policy"
    static let shippedRule = "/etc/polkit-1/rules.d/50-org.tandem.LicenseManager1.rules"
    static let testRule = "/etc/polkit-1/rules.d/49-tandem-test.rules"
    let process = Process()
    let logPath: String
    /// What was at the installed paths before (a host with the package installed): restored.
    private var before: [String: Data] = [:]

    /// The test's rule: "daemon" stands for an administrator (polkit reads groups from the
    /// user database, not from the caller's process), "bin" may manage seats only, "nobody"
    /// is refused outright; anyone else gets the actions' default (authenticate as admin).
    static let rule = """
        polkit.addRule(function (action, subject) {
            if (action.id.indexOf("org.tandem.LicenseManager1.") != 0) { return polkit.Result.NOT_HANDLED; }
            if (subject.user == "daemon") { return polkit.Result.YES; }
            if (subject.user == "bin" && action.id == "org.tandem.LicenseManager1.manage-seats") {
                return polkit.Result.YES;
            }
            if (subject.user == "nobody") { return polkit.Result.NO; }
            return polkit.Result.NOT_HANDLED;
        });
        """

    init(bus: TestBus) throws {
        try FileManager.default.createDirectory(atPath: "/etc/polkit-1/rules.d", withIntermediateDirectories: true)
        for path in [Self.actionFile, Self.shippedRule, Self.testRule] {
            before[path] = FileManager.default.contents(atPath: path)
        }
        for (from, to) in [
            ("packaging/polkit/org.tandem.LicenseManager1.policy", Self.actionFile),
            ("packaging/polkit/50-org.tandem.LicenseManager1.rules", Self.shippedRule)
        ] {
            try? FileManager.default.removeItem(atPath: to)
            try FileManager.default.copyItem(atPath: packageRoot + "/" + from, toPath: to)
            chmod(to, 0o644)
        }
        try Self.rule.write(toFile: Self.testRule, atomically: true, encoding: .utf8)
        chmod(Self.testRule, 0o644)
        logPath = makeTempDir("polkitd") + "/polkitd.log"
        _ = FileManager.default.createFile(atPath: logPath, contents: nil)
        process.executableURL = URL(fileURLWithPath: Self.daemon)
        // Not --no-debug: that sends polkitd's output, its rule errors included, to /dev/null.
        process.arguments = []
        process.environment = ProcessInfo.processInfo.environment.merging(bus.env) { $1 }
        process.standardOutput = FileHandle(forWritingAtPath: logPath)
        process.standardError = FileHandle(forWritingAtPath: logPath)
        try process.run()
        let client = try bus.client()
        try waitFor("polkitd on the bus", seconds: 10) {
            try client.call(
                destination: "org.freedesktop.DBus", path: "/org/freedesktop/DBus", interface: "org.freedesktop.DBus",
                "NameHasOwner", [.string("org.freedesktop.PolicyKit1")]
            ).first == .bool(true)
        }
    }

    func log() -> String { (try? String(contentsOfFile: logPath, encoding: .utf8)) ?? "" }
    func signal(_ sig: Int32) { kill(process.processIdentifier, sig) }

    deinit {
        if process.isRunning {
            kill(process.processIdentifier, SIGCONT)
            kill(process.processIdentifier, SIGKILL)
            process.waitUntilExit()
        }
        for f in [Self.actionFile, Self.shippedRule, Self.testRule] {
            try? FileManager.default.removeItem(atPath: f)
            if let old = before[f] { _ = FileManager.default.createFile(atPath: f, contents: old) }
        }
    }
}

@Suite(.serialized) struct PolkitAuthorization {
    static let daemon = 1, bin = 2, sys = 3

    /// Every administrative method × {root, a user polkit allows, one it allows seats only,
    /// one it refuses, one it would ask to authenticate}: only the expected pass, a refusal
    /// changes nothing, and a caller gone before polkit answers is refused (CVE-2021-3560).
    @Test func theAuthorizationMatrix() throws {
        guard FileManager.default.isExecutableFile(atPath: Polkitd.daemon) else {
            Issue.record("polkitd is not installed (apt-get install polkitd)")
            return
        }
        let bus = try TestBus()
        let polkitd = try Polkitd(bus: bus)
        let vendor = try Vendor()
        let d = try Tandemd(bus: bus, config: "[Server]\nVendorKeys=\(vendor.keysDir)\nAdminGroup=staff\n")
        try d.start()
        let root = try bus.client()
        let serverId = try d.serverId
        _ = try root.call("ActivateLicense", [.string(try vendor.issue(to: [serverId], seats: 20, id: "LIC-A"))])
        let second = try vendor.issue(to: [serverId], seats: 5, id: "LIC-B")
        func snapshot() throws -> [String] {
            try ["ListLicenses", "ListLeases", "ListReservations"].map { "\(try root.call($0))" }
                + ["\(try root.get("ServerId"))"]
        }

        enum Expect { case allowed, denied, challenge }
        let seatsOnly: [String: Expect] = [
            "Reserve": .allowed, "Unreserve": .allowed, "Release": .allowed, "Renew": .allowed
        ]
        // busctl allows interactive authorization unless told not to; with no authentication
        // agent, polkit's challenge then ends refused, and only a caller that did not allow it
        // is told to (InteractiveAuthorizationRequired).
        let callers: [(name: String, uid: Int?, interactive: Bool, expect: (String) -> Expect)] = [
            ("root", nil, false, { _ in .allowed }),
            ("daemon", Self.daemon, false, { _ in .allowed }),
            ("bin", Self.bin, false, { seatsOnly[$0] ?? .challenge }),
            ("nobody", nobody, false, { _ in .denied }),
            ("sys", Self.sys, false, { _ in .challenge }),
            ("sys, interactive", Self.sys, true, { _ in .denied })
        ]
        var failures: [String] = []
        var tried: [Expect: Int] = [:]
        for caller in callers {
            // Someone else's lease for each caller to try to release.
            let lease = try root.call("Acquire", [.string("cad"), .uint32(1), .string("ws"), .vardict([])])
            let leaseId = lease.first?.stringValue ?? ""
            let calls: [(String, [String])] = [
                ("ActivateLicense", ["s", second]), ("DeactivateLicense", ["s", "LIC-NONE"]),
                ("Reserve", ["sus", "cad", "1", "h-\(caller.uid ?? 0)"]), ("Unreserve", ["s", "res-none"]),
                ("ResetServerId", []), ("ListAudit", ["tu", "0", "0"]), ("Renew", ["s", leaseId]),
                ("Release", ["s", leaseId]), ("PrepareBackup", ["s", "127.0.0.1:1"]),
                ("EnableBackup", ["s", "127.0.0.1:1"]), ("DisableBackup", []), ("Sync", [])
            ]
            for (member, args) in calls {
                let before = try snapshot()
                let r = try busctl(
                    bus,
                    [
                        "--allow-interactive-authorization=\(caller.interactive ? "yes" : "no")", "call",
                        BusNames.service,
                        BusNames.rootPath, BusNames.managerInterface, member
                    ] + args, uid: caller.uid)
                let got: Expect =
                    r.stderr.contains("Interactive authentication required")
                        || r.stderr.contains("needs an authentication")
                    ? .challenge : r.stderr.contains("Access denied") ? .denied : .allowed
                let want = caller.expect(member)
                tried[want, default: 0] += 1
                if got != want { failures.append("\(caller.name) \(member): \(got), expected \(want): \(r.stderr)") }
                if got != .allowed, try snapshot() != before {
                    failures.append("\(caller.name) \(member) changed state")
                }
            }
        }
        print(
            "authorization matrix: \(tried.values.reduce(0, +)) calls, \(tried[.allowed] ?? 0) to be allowed,"
                + " \(tried[.denied] ?? 0) refused, \(tried[.challenge] ?? 0) challenged; \(failures.count) wrong")
        #expect(failures.isEmpty, "\(failures.joined(separator: "\n"))\n--- polkitd:\n\(polkitd.log().suffix(2000))")
        // polkitd reports a rule it cannot use as "Error compiling script FILE" (or evaluating).
        let complaints = polkitd.log().split(separator: "\n").filter { $0.contains("Error") && $0.contains("tandem") }
        #expect(complaints.isEmpty, "polkitd refused a rule: \(complaints)")

        // A caller polkit would allow, gone before polkit answers: polkitd is frozen while it
        // sends and disconnects, then finds no such caller, and tandemd refuses.
        let before = try snapshot()
        polkitd.signal(SIGSTOP)
        let sent = try busctl(
            bus,
            [
                "call", "--expect-reply=no", "org.tandem.LicenseManager1", "/org/tandem/LicenseManager1",
                "org.tandem.LicenseManager1.Manager", "Reserve", "sus", "cad", "1", "gone"
            ], uid: Self.daemon)
        #expect(sent.status == 0, "\(sent.stderr)")
        usleep(300_000)
        polkitd.signal(SIGCONT)
        do {
            try waitFor("the refusal of the vanished caller in the trail", seconds: 10) {
                try AuditRow.rows(root.call("ListAudit", [.uint64(0), .uint32(0)])).contains {
                    // (Its uid may be unknown too: it may be gone before tandemd asked the bus.)
                    $0.action == "Reserve" && $0.result == "AccessDenied" && $0.detail.contains("authorization failed")
                }
            }
        } catch {
            Issue.record(
                Comment(
                    rawValue:
                        "\(error)\n--- tandemd:\n\(d.log().suffix(3000))\n--- polkitd:\n\(polkitd.log().suffix(2000))"))
        }
        #expect(try snapshot() == before, "a caller gone before the answer was authorized")
    }
}
