import ArgumentParser
import CTandemSQLite
import Foundation
import TandemBus
import TandemLicensing
import TandemStore

/// `tandem-bench`: Acquire+Release throughput over D-Bus against baselines measured in the
/// same run on the same bus and disk.
public struct TandemBench: ParsableCommand {
    public static let configuration = CommandConfiguration(
        commandName: "tandem-bench",
        abstract: "Measure Acquire+Release round trips over D-Bus against raw Ping and raw SQLite commit baselines.")
    public init() {}

    @Option(help: "Seconds per measurement.") var seconds: Double = 3
    @Option(help: "Concurrent clients for the parallel run.") var clients: Int = 8
    @Option(help: "Directory on the disk to measure (state and the raw SQLite baseline go here).") var dir: String = "/var/tmp"
    @Option(help: "Directory holding tandemd (default: next to tandem-bench).") var binDir: String?

    public static func main(_ args: [String]) -> Never {
        do {
            var c = try parseAsRoot(args)
            try c.run()
            Foundation.exit(0)
        } catch let f as CLIFailure {
            FileHandle.standardError.write(Data("tandem-bench: \(f.description)\n".utf8))
            Foundation.exit(1)
        } catch { exit(withError: error) }
    }

    public func run() throws {
        let work = dir + "/tandem-bench-\(getpid())"
        try FileManager.default.createDirectory(atPath: work + "/keys", withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: work) }
        let bins = binDir ?? URL(fileURLWithPath: "/proc/self/exe").resolvingSymlinksInPath().deletingLastPathComponent().path

        // Baseline 1: raw single-row synchronous=FULL commits on the same disk.
        let raw = try rawCommitRate(path: work + "/raw.db", seconds: seconds)

        // A private bus and a daemon with a big license.
        let busConf = work + "/bus.conf"
        try """
            <!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
             "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
            <busconfig><type>system</type><listen>unix:path=\(work)/bus.sock</listen><auth>EXTERNAL</auth>
            <policy context="default"><allow user="*"/><allow own="*"/><allow send_type="method_call"/>
            <allow send_type="signal"/><allow send_requested_reply="true" send_type="method_return"/>
            <allow send_requested_reply="true" send_type="error"/><allow receive_type="method_call"/>
            <allow receive_type="method_return"/><allow receive_type="error"/><allow receive_type="signal"/></policy></busconfig>
            """.write(toFile: busConf, atomically: true, encoding: .utf8)
        let bus = Process()
        bus.executableURL = URL(fileURLWithPath: "/usr/bin/dbus-daemon")
        bus.arguments = ["--nofork", "--config-file=\(busConf)"]
        try bus.run()
        defer { kill(bus.processIdentifier, SIGKILL); bus.waitUntilExit() }
        let address = "unix:path=\(work)/bus.sock"
        for _ in 0..<100 where !FileManager.default.fileExists(atPath: work + "/bus.sock") { usleep(20_000) }

        let key = VendorPrivateKey()
        try key.publicKey.fileText.write(toFile: work + "/keys/bench.pub", atomically: true, encoding: .utf8)
        try "[Server]\nVendorKeys=\(work)/keys\n".write(toFile: work + "/tandemd.conf", atomically: true, encoding: .utf8)
        let daemon = Process()
        daemon.executableURL = URL(fileURLWithPath: bins + "/tandemd")
        daemon.arguments = ["--config", work + "/tandemd.conf", "--state-dir", work + "/state", "--log-level", "warning"]
        var env = ProcessInfo.processInfo.environment
        env["DBUS_SYSTEM_BUS_ADDRESS"] = address
        env["NOTIFY_SOCKET"] = nil
        daemon.environment = env
        try daemon.run()
        defer { kill(daemon.processIdentifier, SIGTERM); daemon.waitUntilExit() }

        let admin = try BusClient(.address(address))
        var up = false
        for _ in 0..<200 where !up {
            up = (try? admin.get("ServerId")) != nil
            if !up { usleep(25_000) }
        }
        guard up else { throw CLIFailure("tandemd did not start") }
        let sid = try admin.get("ServerId").stringValue ?? ""
        let doc = try key.sign(LicenseDocument(id: "BENCH", product: "Bench", feature: "bench", seats: 1_000_000, notAfter: nil,
                                               issuedTo: [sid], issuedAt: "2026-01-01", keyId: ""))
        _ = try admin.call("ActivateLicense", [.string(doc.text)])

        // Baseline 2: raw Peer.Ping round trips to the daemon on the same bus.
        let ping = try measure(address: address, clients: 1, seconds: seconds) { c in
            _ = try c.call(path: "/org/tandem/LicenseManager1", interface: "org.freedesktop.DBus.Peer", "Ping")
        }
        let pair: @Sendable (BusClient) throws -> Void = { c in
            let r = try c.call("Acquire", [.string("bench"), .uint32(1), .string("bench"), .vardict([])])
            _ = try c.call("Release", [r[0]])
        }
        let one = try measure(address: address, clients: 1, seconds: seconds, pair)
        let many = try measure(address: address, clients: clients, seconds: seconds, pair)

        func f(_ x: Double) -> String { String(format: "%.0f", x) }
        func r(_ x: Double) -> String { String(format: "%.2f", x) }
        print("""
            tandem-bench (\(seconds) s per run, disk: \(dir))
              raw SQLite single-row commits (WAL, synchronous=FULL): \(f(raw))/s
              raw D-Bus Peer.Ping round trips to tandemd:           \(f(ping))/s
              Acquire+Release pairs, 1 client:                     \(f(one))/s  = \(r(one / raw))x raw commit rate, \(r(one / ping))x Ping rate
              Acquire+Release pairs, \(clients) clients:                    \(f(many))/s  = \(r(many / raw))x raw commit rate, \(r(many / ping))x Ping rate
              group commit speed-up (\(clients) clients / 1 client):         \(r(many / one))x
            """)
    }

    func rawCommitRate(path: String, seconds: Double) throws -> Double {
        let db = try SQLiteDatabase(path: path)
        try db.exec("PRAGMA journal_mode=WAL")
        try db.exec("PRAGMA synchronous=FULL")
        try db.exec("CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT NOT NULL)")
        let start = Date()
        var n = 0
        while Date().timeIntervalSince(start) < seconds {
            try db.transaction { try db.run("INSERT INTO t (v) VALUES (?)", .text("lease-0123456789abcdef")) }
            n += 1
        }
        return Double(n) / Date().timeIntervalSince(start)
    }

    /// Runs `body` in a loop on `clients` connections for `seconds`; returns iterations per second.
    func measure(address: String, clients: Int, seconds: Double, _ body: @escaping @Sendable (BusClient) throws -> Void) throws -> Double {
        final class Counter: @unchecked Sendable {
            let lock = NSLock()
            var total = 0
            var failure: String?
        }
        let counter = Counter()
        let group = DispatchGroup()
        let start = Date()
        for _ in 0..<clients {
            group.enter()
            Thread.detachNewThread {
                defer { group.leave() }
                var n = 0
                do {
                    let c = try BusClient(.address(address))
                    while Date().timeIntervalSince(start) < seconds {
                        try body(c)
                        n += 1
                    }
                } catch {
                    counter.lock.lock(); counter.failure = "\(error)"; counter.lock.unlock()
                }
                counter.lock.lock(); counter.total += n; counter.lock.unlock()
            }
        }
        group.wait()
        if let f = counter.failure { throw CLIFailure("benchmark client failed: \(f)") }
        return Double(counter.total) / Date().timeIntervalSince(start)
    }
}
