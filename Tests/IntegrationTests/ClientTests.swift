import Foundation
import TandemBus
import TandemBusClient
import TandemClient
import TandemTesting
import Testing

func clientctl(_ config: String, _ args: [String], bus: TestBus? = nil) throws -> RunResult {
    try run(
        binary("tandemctl"), ["client"] + args, env: ["TANDEM_CLIENT_CONFIG": config].merging(bus?.env ?? [:]) { $1 })
}

func leaseCount(_ f: Fixture) throws -> Int {
    try f.bus.client().call("ListLeases").first?.arrayValue?.count ?? -1
}

@Suite(.serialized) struct ClientSide {
    @Test func configureTestAndUseTheServer() throws {
        let f = try Fixture()
        let address = try f.daemon.httpAddress
        let config = makeTempDir("client") + "/etc/client.conf"
        // An unreachable server is refused unless forced.
        let refused = try clientctl(config, ["configure", "--server", "127.0.0.1:1"])
        #expect(refused.status != 0 && !FileManager.default.fileExists(atPath: config))
        #expect(try clientctl(config, ["configure", "--server", "127.0.0.1:1", "--force"]).status == 0)
        // A standalone server has no backup to fill in.
        #expect(try clientctl(config, ["configure", "--server", address, "--enable-backup"]).status != 0)
        let ok = try clientctl(config, ["configure", "--server", address])
        #expect(ok.status == 0, "\(ok.stderr)")
        #expect(try String(contentsOfFile: config, encoding: .utf8).contains("Server=\(address)\n"))

        let test = try clientctl(config, ["test-connection", "--json"])
        #expect(test.status == 0)
        let rows = try JSONSerialization.jsonObject(with: Data(test.stdout.utf8)) as? [[String: Any]]
        #expect(rows?.first?["server_id"] as? String == f.serverId)
        #expect(rows?.first?["serving"] as? Bool == true)

        let acq = try clientctl(config, ["acquire", "cad", "--count", "2", "--client", "mill-1", "--json"])
        #expect(acq.status == 0, "\(acq.stderr)")
        let id =
            (try JSONSerialization.jsonObject(with: Data(acq.stdout.utf8)) as? [String: Any])?["lease_id"] as? String
            ?? ""
        #expect(try clientctl(config, ["leases", "--client", "mill-1"]).stdout.contains(id))
        // The lease names its holder: this process's login and host names, unless told otherwise.
        let holders = try LeaseHolderRow.rows(f.bus.client().call("ListLeaseHolders"))
        let hostName = ProcessInfo.processInfo.hostName
        #expect(holders.map(\.user) == ["root"] && holders.map(\.host) == [hostName], "\(holders)")
        let named = try clientctl(config, ["acquire", "cad", "--client", "mill-2", "--user", "ann", "--host", "h9"])
        #expect(named.status == 0, "\(named.stderr)")
        let after = try LeaseHolderRow.rows(f.bus.client().call("ListLeaseHolders"))
        let mill2 = after.filter { $0.client == "mill-2" }
        #expect(mill2.map(\.user) == ["ann"] && mill2.map(\.host) == ["h9"], "\(after)")
        for r in mill2 { _ = try f.bus.client().call("Release", [.string(r.id)]) }
        #expect(try clientctl(config, ["renew", id]).status == 0)
        #expect(try leaseCount(f) == 1)
        #expect(try clientctl(config, ["release", id]).status == 0)
        #expect(try leaseCount(f) == 0)
        let gone = try clientctl(config, ["release", id])
        #expect(gone.status == 1 && gone.stderr.contains("LeaseNotFound"))
    }

    @Test func runPassesExitStatusAndReleasesTheSeat() throws {
        let f = try Fixture()
        let config = makeTempDir("client") + "/client.conf"
        #expect(try clientctl(config, ["configure", "--server", try f.daemon.httpAddress]).status == 0)
        // The seat is held while COMMAND runs ...
        let inside = try clientctl(
            config,
            [
                "run", "--feature", "cad", "--count", "2", "--",
                "busctl", "call", "org.tandem.LicenseManager1", "/org/tandem/LicenseManager1",
                "org.tandem.LicenseManager1.Manager", "ListLeases"
            ], bus: f.bus)
        #expect(inside.status == 0)
        #expect(inside.stdout.contains("a(sssutt) 1 "), "\(inside.stdout)")
        // ... and its exit status passes through; the seat is free afterwards.
        #expect(try clientctl(config, ["run", "--feature", "cad", "--", "sh", "-c", "exit 7"]).status == 7)
        #expect(try leaseCount(f) == 0)
        // No seat: COMMAND does not run; a distinct status.
        let marker = makeTempDir("run") + "/ran"
        let noSeat = try clientctl(config, ["run", "--feature", "cad", "--count", "9", "--", "touch", marker])
        #expect(noSeat.status == 75)
        #expect(!FileManager.default.fileExists(atPath: marker))
        // A killed command: 128+9, and the seat is released.
        let killed = try clientctl(config, ["run", "--feature", "cad", "--", "sh", "-c", "kill -9 $$"])
        #expect(killed.status == 137)
        #expect(try leaseCount(f) == 0)
    }

    @Test func signalsToTheWrapperReachTheCommandAndTheSeatIsReleased() throws {
        let f = try Fixture()
        let config = makeTempDir("client") + "/client.conf"
        #expect(try clientctl(config, ["configure", "--server", try f.daemon.httpAddress]).status == 0)
        let p = Process()
        p.executableURL = URL(fileURLWithPath: binary("tandemctl"))
        p.arguments = ["client", "run", "--feature", "cad", "--", "sleep", "30"]
        p.environment = ProcessInfo.processInfo.environment.merging(["TANDEM_CLIENT_CONFIG": config]) { $1 }
        p.standardOutput = FileHandle.nullDevice
        p.standardError = FileHandle.nullDevice
        try p.run()
        for _ in 0..<100 where (try? leaseCount(f)) != 1 { usleep(50_000) }
        #expect(try leaseCount(f) == 1)
        kill(p.processIdentifier, SIGTERM)
        p.waitUntilExit()
        #expect(p.terminationStatus == 128 + SIGTERM)
        #expect(try leaseCount(f) == 0)
    }

    @Test func failsOverToTheNextServer() throws {
        let f = try Fixture()
        let config = makeTempDir("client") + "/client.conf"
        try "[Client]\nServer=127.0.0.1:1\nBackup=\(try f.daemon.httpAddress)\n".write(
            toFile: config, atomically: true, encoding: .utf8)
        let r = try clientctl(config, ["acquire", "cad", "--client", "fo", "--json"])
        #expect(r.status == 0, "\(r.stderr)")
        #expect(try leaseCount(f) == 1)
        // Nothing reachable at all: a distinct status, after trying again for --failover-wait.
        try "[Client]\nServer=127.0.0.1:1\n".write(toFile: config, atomically: true, encoding: .utf8)
        let t0 = Date()
        #expect(try clientctl(config, ["acquire", "cad", "--failover-wait", "1.5"]).status == 69)
        #expect(Date().timeIntervalSince(t0) >= 1.2, "gave up before --failover-wait")
    }

    @Test func configurationFileRoundTrips() throws {
        let c = ClientConfiguration(server: "a:1", backup: "b:2", tokenFile: "/t")
        #expect(try ClientConfiguration.parse(c.text, file: "x") == c)
        #expect(throws: ClientConfiguration.ParseError.self) {
            try ClientConfiguration.parse("[Client]\nSrv=x\n", file: "x")
        }
        #expect(TandemClient.url("host", "/v1")?.absoluteString == "http://host:7390/v1")
        #expect(TandemClient.url("[::1]:80", "/v1")?.absoluteString == "http://[::1]:80/v1")
        #expect(TandemClient.url("::1", "/v1")?.absoluteString == "http://[::1]:7390/v1")
    }
}
