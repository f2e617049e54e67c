import Foundation
import TandemBus
import TandemBusClient
import TandemctlCommands
import TandemTesting
import Testing

/// The shipped unit, with ExecStart= pointed at the built binary (verify checks that it exists).
func unitUnderTest(_ name: String = "tandemd") throws -> String {
    let dir = makeTempDir("unit")
    let unit = try String(contentsOfFile: packageRoot + "/systemd/\(name).service", encoding: .utf8)
    #expect(unit.contains("\nExecStart=/usr/bin/\(name)"))
    let path = dir + "/\(name).service"
    try unit.replacingOccurrences(of: "ExecStart=/usr/bin/\(name)", with: "ExecStart=\(binary(name))")
        .write(toFile: path, atomically: true, encoding: .utf8)
    return path
}

@Suite(.serialized) struct SystemdFiles {
    @Test(arguments: ["tandemd", "tandem-witness"])
    func unitPassesSystemdAnalyzeVerify(_ name: String) throws {
        let r = try run("/usr/bin/systemd-analyze", ["verify", "--man=no", try unitUnderTest(name)])
        #expect(r.status == 0)
        // Warnings do not change the exit code: any output at all is a failure.
        #expect(r.stdout.isEmpty && r.stderr.isEmpty, "systemd-analyze verify said: \(r.stdout)\(r.stderr)")
    }

    @Test(arguments: ["tandemd", "tandem-witness"])
    /// What bounds it (README, Install): the network a server needs, local sockets for the bus,
    /// no IP allow list by default, the host's root, the clock device ProtectClock= allows.
    func unitExposureIsAtMostOnePointOne(_ name: String) throws {
        let r = try run(
            "/usr/bin/systemd-analyze", ["security", "--offline=true", "--no-pager", try unitUnderTest(name)])
        guard
            let line = (r.stdout + r.stderr).split(separator: "\n").first(where: {
                $0.contains("Overall exposure level")
            }),
            let score = line.split(separator: ":").last?.split(separator: " ").first.flatMap({ Double($0) })
        else {
            Issue.record("no exposure level in: \(r.stdout)\(r.stderr)")
            return
        }
        #expect(score <= 1.1, "exposure \(score): \(line)")
    }

    @Test func unitIsANotifyServiceWithWatchdogAndBusName() throws {
        let unit = try String(contentsOfFile: packageRoot + "/systemd/tandemd.service", encoding: .utf8)
        for line in [
            "Type=notify", "BusName=org.tandem.LicenseManager1", "Restart=on-failure", "User=tandem",
            "StateDirectory=tandem", "ConfigurationDirectory=tandem", "RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6"
        ] {
            #expect(unit.contains("\n\(line)\n"), "missing \(line)")
        }
        #expect(unit.contains("\nWatchdogSec="))
    }

    @Test func serviceAccountChangeWritesADropInAndAPolicy() throws {
        // "daemon" exists on Debian; its primary group is "daemon".
        let plan = try ServiceAccountPlan.make(user: "daemon", group: nil)
        #expect(plan == ServiceAccountPlan(user: "daemon", group: "daemon"))
        let root = makeTempDir("sa")
        try plan.write(root: root)
        let dropIn = try String(contentsOfFile: root + ServiceAccountPlan.dropInPath, encoding: .utf8)
        #expect(dropIn.contains("\nUser=daemon\nGroup=daemon\n"))
        let policy = try String(contentsOfFile: root + ServiceAccountPlan.policyPath, encoding: .utf8)
        #expect(
            policy.contains("<policy user=\"daemon\">")
                && policy.contains("<allow own=\"org.tandem.LicenseManager1\"/>"))
        // Refusals: unknown accounts, root, unknown groups — one line, non-zero, nothing written.
        for (args, reason) in [
            (["nosuchuser"], "no such user"), (["root"], "refusing to run tandemd as root"),
            (["daemon", "--group", "nosuchgroup"], "no such group")
        ] {
            let r = try run(binary("tandemctl"), ["service-account", "set"] + args)
            #expect(r.status == 1)
            #expect(
                r.stderr.hasPrefix("tandemctl: \(reason)") && r.stderr.split(separator: "\n").count == 1, "\(r.stderr)")
        }
    }

    /// Runs a bus whose only ownership rules are the shipped policy (with its service account
    /// swapped for the existing user "daemon"), and checks who may own and call the name.
    @Test func busPolicyLetsOnlyTheServiceAccountOwnTheName() throws {
        let dir = makeTempDir("policy")
        let policy = try String(
            contentsOfFile: packageRoot + "/systemd/org.tandem.LicenseManager1.conf", encoding: .utf8
        )
        .replacingOccurrences(of: "user=\"tandem\"", with: "user=\"daemon\"")
        try policy.write(toFile: dir + "/tandem.conf", atomically: true, encoding: .utf8)
        // Nobody may own anything but what the included policy allows.
        let bus = try TestBus(
            policy: """
                <policy context="default">
                  <allow user="*"/>
                  <deny own="*"/>
                  <deny send_type="method_call"/>
                  <allow send_destination="org.freedesktop.DBus"/>
                  <allow send_requested_reply="true" send_type="method_return"/>
                  <allow send_requested_reply="true" send_type="error"/>
                  <allow receive_type="method_return"/>
                  <allow receive_type="error"/>
                  <allow receive_type="method_call"/>
                </policy>
                """, include: dir + "/tandem.conf")
        let env = bus.env
        func requestName(uid: Int) throws -> RunResult {
            try run(
                "/usr/bin/setpriv",
                [
                    "--reuid=\(uid)", "--regid=\(uid)", "--clear-groups", "/usr/bin/busctl", "call",
                    "org.freedesktop.DBus", "/org/freedesktop/DBus", "org.freedesktop.DBus",
                    "RequestName", "su", BusNames.service, "0"
                ], env: env)
        }
        let daemonUid = 1  // Debian's "daemon" user
        let owner = try requestName(uid: daemonUid)
        #expect(
            owner.status == 0 && owner.stdout.contains("u 1"),
            "the service account could not own the name: \(owner.stderr)")
        let other = try requestName(uid: 65534)
        #expect(other.status != 0, "another user could own the name")
        #expect(other.stderr.contains("Access denied"), "\(other.stderr)")
    }
}
