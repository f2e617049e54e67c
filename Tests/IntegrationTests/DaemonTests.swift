import Foundation
import TandemBus
import TandemBusClient
import TandemCore
import Testing

/// A running daemon with a trusted vendor key and one active 5-seat license for `cad`.
struct Fixture {
    let bus: TestBus
    let vendor: Vendor
    let daemon: Tandemd
    let serverId: String

    init(activate: Bool = true, extraConfig: String = "", env: [String: String] = [:]) throws {
        bus = try TestBus()
        vendor = try Vendor()
        daemon = try Tandemd(
            bus: bus, config: "[Server]\nVendorKeys=\(vendor.keysDir)\nAdminGroup=staff\n\(extraConfig)", env: env)
        try daemon.start()
        serverId = try daemon.serverId
        if activate {
            let text = try vendor.issue(to: [serverId], id: "LIC-CAD")
            _ = try bus.client().call("ActivateLicense", [.string(text)])
        }
    }
}

@Suite(.serialized) struct DaemonCycle {
    /// A thousand idle connections must not exhaust a soft limit of 1024 (issue 15): tandemd
    /// raises its soft open-files limit to the hard one at start.
    @Test func raisesItsOpenFilesLimitToTheHardOne() throws {
        let vendor = try Vendor()
        let daemon = try Tandemd(bus: try TestBus(), config: "[Server]\nVendorKeys=\(vendor.keysDir)\n")
        daemon.fileLimit = (512, 8192)
        try daemon.start()
        let pid = try #require(daemon.process?.processIdentifier)
        let limits = try String(contentsOfFile: "/proc/\(pid)/limits", encoding: .utf8)
        let line = limits.split(separator: "\n").first { $0.hasPrefix("Max open files") } ?? ""
        #expect(line.split(separator: " ").dropFirst(3).prefix(2).map(String.init) == ["8192", "8192"], "\(line)")
    }

    @Test func fullCycleThroughBusctlAndTandemctl() throws {
        let f = try Fixture(activate: false)
        let bus = f.bus
        // Activation request names this server.
        let req = try tandemctl(bus, ["license", "request"])
        #expect(req.status == 0)
        #expect(req.stdout.contains("Server-Id: \(f.serverId)"))

        let licensePath = f.vendor.dir + "/cad.lic"
        try f.vendor.issue(to: [f.serverId], seats: 5, id: "LIC-CAD").write(
            toFile: licensePath, atomically: true, encoding: .utf8)
        let act = try tandemctl(bus, ["license", "activate", licensePath])
        #expect(act.status == 0, "\(act.stderr)")
        #expect(act.stdout.contains("LIC-CAD"))

        // A second license for the same feature adds seats; activated with plain busctl.
        let second = try f.vendor.issue(to: [f.serverId], seats: 3, id: "LIC-CAD-2")
        let b = try managerCall(bus, "ActivateLicense", ["s", second])
        #expect(b.status == 0, "\(b.stderr)")
        #expect(b.stdout.contains("\"LIC-CAD-2\""))

        let tree = try busctl(bus, ["tree", BusNames.service])
        #expect(tree.stdout.contains("/org/tandem/LicenseManager1/license/LIC_2dCAD_2d2"))
        let seats = try busctl(
            bus,
            [
                "get-property", BusNames.service, "/org/tandem/LicenseManager1/license/LIC_2dCAD",
                BusNames.licenseInterface, "Seats"
            ])
        #expect(seats.stdout.trimmingCharacters(in: .whitespacesAndNewlines) == "u 5")

        // Acquire with busctl, with tandemctl, with options.
        let acq = try managerCall(bus, "Acquire", ["susa{sv}", "cad", "2", "ws-1", "1", "ttl_usec", "t", "60000000"])
        #expect(acq.status == 0, "\(acq.stderr)")
        let leaseId = acq.stdout.split(separator: "\"")[1]
        let ctlAcq = try tandemctl(bus, ["acquire", "cad", "--count", "3", "--client", "ws-2", "--json"])
        #expect(ctlAcq.status == 0, "\(ctlAcq.stderr)")
        let json = try JSONSerialization.jsonObject(with: Data(ctlAcq.stdout.utf8)) as! [String: Any]
        let lease2 = json["lease_id"] as! String

        let usage = try tandemctl(bus, ["usage", "--json"])
        let rows = try JSONSerialization.jsonObject(with: Data(usage.stdout.utf8)) as! [[String: Any]]
        #expect(rows.count == 1)
        #expect(rows[0]["seats"] as? Int == 8)
        #expect(rows[0]["in_use"] as? Int == 5)
        #expect(rows[0]["available"] as? Int == 3)

        // Reserve 2 for "cam"; others then see only 1.
        let res = try tandemctl(bus, ["reserve", "cad", "--count", "2", "--holder", "cam", "--json"])
        #expect(res.status == 0, "\(res.stderr)")
        let resId =
            (try JSONSerialization.jsonObject(with: Data(res.stdout.utf8)) as! [String: Any])["reservation_id"]
            as! String
        let denied = try tandemctl(bus, ["acquire", "cad", "--count", "2", "--client", "other"])
        #expect(denied.status != 0)
        #expect(denied.stderr.contains("InsufficientSeats"))
        #expect(denied.stderr.split(separator: "\n").count == 1)
        #expect(try tandemctl(bus, ["acquire", "cad", "--count", "2", "--client", "cam"]).status == 0)
        let resList = try tandemctl(bus, ["reservations"])
        #expect(resList.stdout.contains(resId))
        #expect(try tandemctl(bus, ["unreserve", resId]).status == 0)

        // Renew and release.
        let renew = try managerCall(bus, "Renew", ["s", String(leaseId)])
        #expect(renew.status == 0 && renew.stdout.hasPrefix("t "))
        #expect(try tandemctl(bus, ["release", lease2]).status == 0)
        #expect(try managerCall(bus, "Release", ["s", String(leaseId)]).status == 0)
        let leases = try tandemctl(bus, ["leases", "--json"])
        let leaseRows = try JSONSerialization.jsonObject(with: Data(leases.stdout.utf8)) as! [[String: Any]]
        #expect(leaseRows.count == 1)
        #expect(leaseRows[0]["client"] as? String == "cam")

        let usage2 =
            try JSONSerialization.jsonObject(with: Data(try tandemctl(bus, ["usage", "--json"]).stdout.utf8))
            as! [[String: Any]]
        #expect(usage2[0]["in_use"] as? Int == 2)
        #expect(usage2[0]["denied"] as? Int == 1)

        let list = try tandemctl(bus, ["license", "list"])
        #expect(list.stdout.contains("LIC-CAD-2"))
        let status = try tandemctl(bus, ["status"])
        #expect(status.stdout.contains(f.serverId))
        #expect(status.stdout.contains("unpaired"))
        #expect(status.stdout.contains("standalone"))

        // Deactivating the 5-seat license would leave 3 seats for 2 in use: allowed.
        #expect(try tandemctl(bus, ["license", "deactivate", "LIC-CAD"]).status == 0)
        let after = try tandemctl(bus, ["license", "list", "--json"])
        #expect(!after.stdout.contains("\"LIC-CAD\""))
    }

    @Test func idempotentAcquisitionReturnsTheSameLease() throws {
        let f = try Fixture()
        let c = try f.bus.client()
        let opts = BusValue.vardict([("request_id", .string("req-42"))])
        let a = try c.call("Acquire", [.string("cad"), .uint32(2), .string("ws"), opts])
        let b = try c.call("Acquire", [.string("cad"), .uint32(2), .string("ws"), opts])
        #expect(a[0] == b[0])
        #expect(try c.call("ListLeases").first?.arrayValue?.count == 1)
    }

    @Test func signalsAnnounceChanges() throws {
        let f = try Fixture(activate: false)
        let listener = try f.bus.client()
        let signals = try SignalCollector(listener)
        let c = try f.bus.client()
        let text = try f.vendor.issue(to: [f.serverId], id: "LIC-SIG")
        _ = try c.call("ActivateLicense", [.string(text)])
        let lease = try c.call("Acquire", [.string("cad"), .uint32(1), .string("ws"), .vardict([])])
        expectBusError("org.tandem.LicenseManager1.LicenseInUse") {
            _ = try c.call("DeactivateLicense", [.string("LIC-SIG")])
        }
        signals.pump(seconds: 5) { signals.received.filter { $0.member == "PropertiesChanged" }.count >= 3 }
        let members = signals.received.map(\.member)
        #expect(members.contains("LicenseActivated"))
        #expect(members.contains("InterfacesAdded"))
        #expect(members.contains("PropertiesChanged"))
        #expect(!members.contains("LicenseDeactivated"), "deactivation must be refused while a seat is in use")

        // A release announces its license's seat counters (the release names only the lease).
        let licensePath = BusNames.licensePath("LIC-SIG")
        signals.pump(seconds: 0.3)
        signals.received = []
        _ = try c.call("Release", [lease[0]])
        signals.pump(seconds: 5) {
            signals.received.contains { $0.member == "PropertiesChanged" && $0.path == licensePath }
        }
        let announced = signals.received.first { $0.member == "PropertiesChanged" && $0.path == licensePath }
        #expect(announced?.args.first == .string(BusNames.licenseInterface), "\(signals.received)")
    }
}

@Suite struct BusClientConnection {
    /// A client is on the bus once made, before its first call: a bus daemon closes connections
    /// that have not finished their handshake within auth_timeout (30 s), which once cut off a
    /// test's client made before a long load.
    @Test func aClientIsOnTheBusBeforeItsFirstCall() throws {
        // A bus that closes unfinished handshakes after 1 s, and a client idle for 1.5 s.
        let bus = try TestBus(policy: TestBus.openPolicy + #"<limit name="auth_timeout">1000</limit>"#)
        let idle = try bus.client()
        usleep(1_500_000)
        let names = try idle.call(
            destination: "org.freedesktop.DBus", path: "/org/freedesktop/DBus", interface: "org.freedesktop.DBus",
            "ListNames")
        #expect(names.first?.arrayValue?.contains(.string(idle.uniqueName)) == true, "\(names)")
    }
}
