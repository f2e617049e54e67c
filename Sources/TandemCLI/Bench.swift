import ArgumentParser
import CTandemSQLite
import Foundation
import Logging
import TandemBus
import TandemCore
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
        let storeRate = try storeCommitRate(path: work + "/store.db", seconds: seconds)

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
        daemon.arguments = ["--config", work + "/tandemd.conf", "--state-dir", work + "/state", "--log-level", "notice"]
        _ = FileManager.default.createFile(atPath: work + "/tandemd.log", contents: nil)
        let daemonLog = FileHandle(forWritingAtPath: work + "/tandemd.log")!
        daemon.standardError = daemonLog
        var env = ProcessInfo.processInfo.environment
        env["DBUS_SYSTEM_BUS_ADDRESS"] = address
        env["NOTIFY_SOCKET"] = nil
        daemon.environment = env
        try daemon.run()
        var stopped = false
        defer { if !stopped { kill(daemon.processIdentifier, SIGTERM); daemon.waitUntilExit() } }

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
        let pingMany = try measure(address: address, clients: clients, seconds: seconds) { c in
            _ = try c.call(path: "/org/tandem/LicenseManager1", interface: "org.freedesktop.DBus.Peer", "Ping")
        }
        let pair: @Sendable (BusClient) throws -> Void = { c in
            let r = try c.call("Acquire", [.string("bench"), .uint32(1), .string("bench"), .vardict([])])
            _ = try c.call("Release", [r[0]])
        }
        let dpid = daemon.processIdentifier, bpid = bus.processIdentifier
        let cpu0 = (cpuSeconds(dpid), cpuSeconds(bpid))
        let one = try measure(address: address, clients: 1, seconds: seconds, pair)
        let cpu1 = (cpuSeconds(dpid), cpuSeconds(bpid))
        let many = try measure(address: address, clients: clients, seconds: seconds, pair)
        let cpu2 = (cpuSeconds(dpid), cpuSeconds(bpid))
        let cpuLines = String(format: """
              CPU per pair, 1 client:  tandemd %.0f µs, dbus-daemon %.0f µs
              CPU per pair, %d clients: tandemd %.0f µs, dbus-daemon %.0f µs

            """, (cpu1.0 - cpu0.0) / (one * seconds) * 1e6, (cpu1.1 - cpu0.1) / (one * seconds) * 1e6,
            clients, (cpu2.0 - cpu1.0) / (many * seconds) * 1e6, (cpu2.1 - cpu1.1) / (many * seconds) * 1e6)

        // Commits per change, from the daemon's own count.
        let before = try admin.get("ServerId") // still up
        _ = before
        kill(daemon.processIdentifier, SIGTERM)
        daemon.waitUntilExit()
        stopped = true
        let log = (try? String(contentsOfFile: work + "/tandemd.log", encoding: .utf8)) ?? ""
        var batching = ""
        if let line = log.split(separator: "\n").last(where: { $0.contains("tandemd stopped") }),
           let c = line.split(separator: " ").first(where: { $0.hasPrefix("commits=") }).flatMap({ Double($0.dropFirst(8)) }),
           let n = line.split(separator: " ").first(where: { $0.hasPrefix("changes=") }).flatMap({ Double($0.dropFirst(8)) }), c > 0 {
            batching = String(format: "  changes per commit over the whole run (group commit): %.2f (%.0f changes, %.0f commits)\n", n / c, n, c)
        }
        func f(_ x: Double) -> String { String(format: "%.0f", x) }
        func r(_ x: Double) -> String { String(format: "%.2f", x) }
        print("""
            tandem-bench (\(seconds) s per run, disk: \(dir))
              raw SQLite single-row commits (WAL, synchronous=FULL): \(f(raw))/s
              Tandem store commits of one lease, no bus (same disk):  \(f(storeRate))/s  = \(r(storeRate / raw))x raw
              raw D-Bus Peer.Ping round trips to tandemd, 1 client:  \(f(ping))/s
              raw D-Bus Peer.Ping round trips to tandemd, \(clients) clients: \(f(pingMany))/s
              Acquire+Release pairs, 1 client:                     \(f(one))/s  = \(r(one / raw))x raw commit rate, \(r(one / ping))x Ping rate
              Acquire+Release pairs, \(clients) clients:                    \(f(many))/s  = \(r(many / raw))x raw commit rate, \(r(many / pingMany))x \(clients)-client Ping rate
              group commit speed-up (\(clients) clients / 1 client):         \(r(many / one))x
            """)
        print(cpuLines + batching, terminator: "")
    }

    /// User + system CPU seconds a process has used (all its threads).
    func cpuSeconds(_ pid: Int32) -> Double {
        guard let stat = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8),
              let close = stat.lastIndex(of: ")") else { return 0 }
        let fields = stat[stat.index(after: close)...].split(separator: " ")
        // After the command: state is field 3; utime and stime are fields 14 and 15.
        guard fields.count > 12, let u = Double(fields[11]), let s = Double(fields[12]) else { return 0 }
        return (u + s) / Double(sysconf(Int32(_SC_CLK_TCK)))
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

    func storeCommitRate(path: String, seconds: Double) throws -> Double {
        let store = try Store(path: path, logger: Logger(label: "bench"))
        let start = Date()
        var n = 0
        while Date().timeIntervalSince(start) < seconds {
            let lease = Lease(id: "lease-\(n)", feature: "bench", client: "bench", count: 1, uid: 0, requestId: nil,
                              acquiredUSec: 1, expiresUSec: 2, ttlUSec: 1, epoch: 1)
            try store.commit([.leaseGranted(lease)], epoch: 1, now: 1)
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
