import ArgumentParser
import CTandemSQLite
import Foundation
import Logging
import TandemBusClient
import TandemCommandLine
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
    @Option(help: "Directory on the disk to measure (state and the raw SQLite baseline go here).") var dir: String =
        "/var/tmp"
    @Option(help: "Directory holding tandemd (default: next to tandem-bench).") var binDir: String?
    @Option(help: "Concurrent HTTP clients (connections) for the network run; needs wrk.") var httpClients: Int = 16

    @Flag(
        help:
            """
            Measure the pair instead: failover time after kill -9 of the serving node, and paired \
            Acquire+Release throughput against the same node standalone.
            """
    )
    var pair = false
    @Option(help: "Failovers to measure with --pair.") var runs: Int = 20
    @Option(
        help: ArgumentHelp(
            """
            With --pair: instead of the rates and failovers, keep the pair under CPU hogs (two busy \
            processes per core) and the clients' load for this many seconds, and count elections.
            """,
            valueName: "seconds"))
    var soak: Double?
    @Flag(help: "Measure the usage history's reads over a year of one-minute data and a million sessions instead.")
    var history = false
    @Flag(
        help: "Measure tandemd with many live leases instead (RSS, restart, HTTP renewals, a million leases).")
    var scale = false

    /// Where tandemd is: --bin-dir, else beside tandem-bench.
    var binaries: String {
        binDir ?? URL(fileURLWithPath: "/proc/self/exe").resolvingSymlinksInPath().deletingLastPathComponent().path
    }

    public func run() throws {
        if pair { return try runPair() }
        if history { return try runHistory() }
        if scale { return try runScale() }
        let work = dir + "/tandem-bench-\(getpid())"
        try FileManager.default.createDirectory(atPath: work + "/keys", withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: work) }
        let bins = binaries

        // Baseline 1: raw single-row synchronous=FULL commits on the same disk.
        let raw = try rawCommitRate(path: work + "/raw.db", seconds: seconds)
        let storeRate = try storeCommitRate(path: work + "/store.db", seconds: seconds)

        // A private bus and a daemon with a big license.
        let (bus, address) = try Self.startBus(dir: work)
        defer { kill(bus.processIdentifier, SIGKILL); bus.waitUntilExit() }
        let key = try Self.writeDaemonConfig(work: work)
        let daemon = try Self.startTandemd(bins: bins, dir: work, address: address)
        var stopped = false
        defer { if !stopped { kill(daemon.processIdentifier, SIGTERM); daemon.waitUntilExit() } }

        let admin = try BusClient(.address(address))
        var up = false
        for _ in 0..<200 where !up {
            up = (try? admin.get(.serverId)) != nil
            if !up { usleep(25_000) }
        }
        guard up else { throw CLIFailure("tandemd did not start") }
        try Self.activateBenchLicense(admin, key)

        // Baseline 2: raw Peer.Ping round trips to the daemon on the same bus.
        let ping = try measure(address: address, clients: 1, seconds: seconds) { c in
            _ = try c.call(path: "/org/tandem/LicenseManager1", interface: "org.freedesktop.DBus.Peer", "Ping")
        }
        let pingMany = try measure(address: address, clients: clients, seconds: seconds) { c in
            _ = try c.call(path: "/org/tandem/LicenseManager1", interface: "org.freedesktop.DBus.Peer", "Ping")
        }
        let pair: @Sendable (BusClient) throws -> Void = { c in
            let r = try c.call(.acquire, [.string("bench"), .uint32(1), .string("bench"), .vardict([])])
            _ = try c.call(.release, [r[0]])
        }
        let dpid = daemon.processIdentifier, bpid = bus.processIdentifier
        // CPU of tandemd, dbus-daemon, these clients, and the machine.
        func cpuSample() -> (Double, Double, Double, (busy: Double, total: Double)) {
            (
                ProcessTimes.cpuSeconds(dpid), ProcessTimes.cpuSeconds(bpid), ProcessTimes.cpuSeconds(getpid()),
                ProcessTimes.machine()
            )
        }
        let cpu0 = cpuSample()
        let one = try measure(address: address, clients: 1, seconds: seconds, pair)
        let cpu1 = cpuSample()
        let many = try measure(address: address, clients: clients, seconds: seconds, pair)
        let cpu2 = cpuSample()
        // What the machine allows, from the same run's baselines: one client waits for a bus
        // round trip and a durable commit per call, so it cannot beat 1 / (2 × (Ping + commit))
        // pairs per second; many clients are bounded by the CPU all processes spend per pair.
        let ceilingOne = 1 / (2 * (1 / ping + 1 / raw))
        let cores = Double(ProcessInfo.processInfo.activeProcessorCount)
        func perPair(_ a: Double, _ b: Double, _ rate: Double) -> Double { (b - a) / (rate * seconds) * 1e6 }
        let totalMany = perPair(cpu1.0, cpu2.0, many) + perPair(cpu1.1, cpu2.1, many) + perPair(cpu1.2, cpu2.2, many)
        let cpuLines = String(
            format: """
                  CPU per pair, 1 client:  tandemd %.0f µs, dbus-daemon %.0f µs, \
                bench clients %.0f µs; machine %.0f%% busy
                  CPU per pair, %d clients: tandemd %.0f µs, dbus-daemon %.0f µs, \
                bench clients %.0f µs; machine %.0f%% busy
                  ceiling, 1 client (a Ping round trip + a raw commit per call): %.0f/s = %.2fx raw commit rate
                  ceiling, %d clients (%.0f cores / %.0f µs of CPU per pair):     %.0f/s = %.2fx raw commit rate

                """, perPair(cpu0.0, cpu1.0, one), perPair(cpu0.1, cpu1.1, one), perPair(cpu0.2, cpu1.2, one),
            busyPercent(cpu0.3, cpu1.3),
            clients, perPair(cpu1.0, cpu2.0, many), perPair(cpu1.1, cpu2.1, many), perPair(cpu1.2, cpu2.2, many),
            busyPercent(cpu1.3, cpu2.3),
            ceilingOne, ceilingOne / raw, clients, cores, totalMany, cores / totalMany * 1e6,
            cores / totalMany * 1e6 / raw)

        // The network API, with wrk as the load generator (keep-alive connections).
        var httpLines = ""
        if let listen = try? admin.get(.listenAddresses).arrayValue?.first?.stringValue,
            FileManager.default.isExecutableFile(atPath: "/usr/bin/wrk")
        {
            let busMany = try measure(address: address, clients: httpClients, seconds: seconds, pair)
            let base = "http://\(listen)"
            let script = work + "/pairs.lua"
            try Self.wrkScript.write(toFile: script, atomically: true, encoding: .utf8)
            let threads = String(min(2, httpClients))
            let serverGet = try wrk([
                "-t", threads, "-c", String(httpClients), "-d", "\(Int(seconds))s", base + "/v1/server"
            ])
            let http1 = try wrk(["-t", "1", "-c", "1", "-d", "\(Int(seconds))s", "-s", script, base + "/v1/leases"]) / 2
            let httpMany =
                try wrk([
                    "-t", threads, "-c", String(httpClients), "-d", "\(Int(seconds))s", "-s", script,
                    base + "/v1/leases"
                ]) / 2
            httpLines = String(
                format: """
                      HTTP GET /v1/server, %d connections (baseline):         %.0f/s
                      HTTP Acquire+Release pairs, 1 connection:              %.0f/s
                      HTTP Acquire+Release pairs, %d connections:            %.0f/s  = %.2fx GET rate
                      D-Bus Acquire+Release pairs, %d clients (same run):     %.0f/s
                      HTTP / D-Bus pairs at %d clients:                        %.2fx

                    """, httpClients, serverGet, http1, httpClients, httpMany, httpMany * 2 / serverGet, httpClients,
                busMany, httpClients, httpMany / busMany)
        } else {
            httpLines = "  (network API not measured: needs wrk, apt-get install wrk)\n"
        }

        // Commits per change, from the daemon's own count.
        kill(daemon.processIdentifier, SIGTERM)
        daemon.waitUntilExit()
        stopped = true
        let log = (try? String(contentsOfFile: work + "/tandemd.log", encoding: .utf8)) ?? ""
        var batching = ""
        if let line = log.split(separator: "\n").last(where: { $0.contains("tandemd stopped") }),
            let c = line.split(separator: " ").first(where: { $0.hasPrefix("commits=") }).flatMap({
                Double($0.dropFirst(8))
            }),
            let n = line.split(separator: " ").first(where: { $0.hasPrefix("changes=") }).flatMap({
                Double($0.dropFirst(8))
            }), c > 0
        {
            batching = String(
                format: "  changes per commit over the whole run (group commit): %.2f (%.0f changes, %.0f commits)\n",
                n / c, n, c)
        }
        func f(_ x: Double) -> String { String(format: "%.0f", x) }
        func r(_ x: Double) -> String { String(format: "%.2f", x) }
        print(
            """
            tandem-bench (\(seconds) s per run, disk: \(dir))
              raw SQLite single-row commits (WAL, synchronous=FULL): \(f(raw))/s
              Tandem store commits of one lease, no bus (same disk):  \(f(storeRate))/s  = \(r(storeRate / raw))x raw
              raw D-Bus Peer.Ping round trips to tandemd, 1 client:  \(f(ping))/s
              raw D-Bus Peer.Ping round trips to tandemd, \(clients) clients: \(f(pingMany))/s
              Acquire+Release pairs, 1 client:                     \(f(one))/s  = \(r(one / raw))x raw commit rate, \
            \(r(one / ping))x Ping rate
              Acquire+Release pairs, \(clients) clients:                    \(f(many))/s  = \(r(many / raw))x \
            raw commit rate, \(r(many / pingMany))x \(clients)-client Ping rate
              group commit speed-up (\(clients) clients / 1 client):         \(r(many / one))x
            """)
        print(cpuLines + httpLines + batching, terminator: "")
    }

    /// Alternates POST /v1/leases and DELETE of a lease it got, per wrk thread.
    static let wrkScript = """
        local leases = {}
        local n = 0
        request = function()
          if #leases > 0 then
            local id = table.remove(leases)
            return wrk.format("DELETE", "/v1/leases/" .. id)
          end
          n = n + 1
          return wrk.format("POST", "/v1/leases", {["Content-Type"] = "application/json"},
            '{"feature":"bench","client":"wrk"}')
        end
        response = function(status, headers, body)
          if status == 201 then
            local id = body:match('"lease_id":"([^"]+)"')
            if id then table.insert(leases, id) end
          elseif status ~= 204 then
            error("unexpected status " .. status)
          end
        end
        """

    /// Runs wrk and returns its requests per second.
    func wrk(_ args: [String]) throws -> Double {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: "/usr/bin/wrk")
        p.arguments = args
        let out = Pipe()
        p.standardOutput = out
        p.standardError = FileHandle.nullDevice
        try p.run()
        let data = out.fileHandleForReading.readDataToEndOfFile()
        p.waitUntilExit()
        let text = String(decoding: data, as: UTF8.self)
        guard let line = text.split(separator: "\n").first(where: { $0.hasPrefix("Requests/sec:") }),
            let rate = Double(line.split(separator: " ").last ?? "")
        else {
            throw CLIFailure("wrk gave no rate: \(text)")
        }
        if text.contains("Non-2xx") { throw CLIFailure("wrk saw failed requests: \(text)") }
        return rate
    }

    func busyPercent(_ a: (busy: Double, total: Double), _ b: (busy: Double, total: Double)) -> Double {
        b.total > a.total ? (b.busy - a.busy) / (b.total - a.total) * 100 : 0
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
            let lease = Lease(
                id: "lease-\(n)", feature: "bench", client: "bench", count: 1, uid: 0, requestId: nil,
                acquiredUSec: 1, expiresUSec: 2, ttlUSec: 1, epoch: 1)
            try store.commit([.leaseGranted(lease)], epoch: 1, now: 1)
            n += 1
        }
        return Double(n) / Date().timeIntervalSince(start)
    }

    /// Runs `body` in a loop on `clients` connections for `seconds`; returns iterations per second.
    /// A private dbus-daemon with an open policy, listening in `dir`.
    static func startBus(dir: String) throws -> (Process, String) {
        let busConf = dir + "/bus.conf"
        try """
        <!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
         "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
        <busconfig><type>system</type><listen>unix:path=\(dir)/bus.sock</listen><auth>EXTERNAL</auth>
        <policy context="default"><allow user="*"/><allow own="*"/><allow send_type="method_call"/>
        <allow send_type="signal"/><allow send_requested_reply="true" send_type="method_return"/>
        <allow send_requested_reply="true" send_type="error"/><allow receive_type="method_call"/>
        <allow receive_type="method_return"/><allow receive_type="error"/><allow receive_type="signal"/>
        </policy></busconfig>
        """.write(toFile: busConf, atomically: true, encoding: .utf8)
        let bus = Process()
        bus.executableURL = URL(fileURLWithPath: "/usr/bin/dbus-daemon")
        bus.arguments = ["--nofork", "--config-file=\(busConf)"]
        try bus.run()
        for _ in 0..<100 where !FileManager.default.fileExists(atPath: dir + "/bus.sock") { usleep(20_000) }
        return (bus, "unix:path=\(dir)/bus.sock")
    }

    /// A vendor key trusted by `work`/tandemd.conf (returned, to sign the benchmark's license)
    /// and the configuration: the network API on a free loopback port, and `extra` settings.
    static func writeDaemonConfig(work: String, extra: String = "") throws -> PrivateSigningKey {
        let key = PrivateSigningKey()
        try key.publicKey.fileText.write(toFile: work + "/keys/bench.pub", atomically: true, encoding: .utf8)
        try "[Server]\nVendorKeys=\(work)/keys\nListen=127.0.0.1:0\n\(extra)".write(
            toFile: work + "/tandemd.conf", atomically: true, encoding: .utf8)
        return key
    }

    /// Activates the benchmark's license: a million seats of `bench`, signed by `key`.
    static func activateBenchLicense(_ admin: BusClient, _ key: PrivateSigningKey) throws {
        let sid = try admin.get(.serverId).stringValue ?? ""
        let doc = try key.sign(
            LicenseDocument(
                id: "BENCH", product: "Bench", feature: "bench", seats: 1_000_000, notAfter: nil,
                issuedTo: [sid], issuedAt: "2026-01-01", keyId: ""))
        _ = try admin.call(.activateLicense, [.string(doc.text)])
    }

    /// tandemd with `dir`/tandemd.conf and state in `dir`/state, logging to `dir`/tandemd.log.
    static func startTandemd(bins: String, dir: String, address: String) throws -> Process {
        let daemon = Process()
        daemon.executableURL = URL(fileURLWithPath: bins + "/tandemd")
        daemon.arguments = ["--config", dir + "/tandemd.conf", "--state-dir", dir + "/state", "--log-level", "notice"]
        if !FileManager.default.fileExists(atPath: dir + "/tandemd.log") {
            _ = FileManager.default.createFile(atPath: dir + "/tandemd.log", contents: nil)
        }
        let log = FileHandle(forWritingAtPath: dir + "/tandemd.log")!
        log.seekToEndOfFile()
        daemon.standardError = log
        var env = ProcessInfo.processInfo.environment
        env["DBUS_SYSTEM_BUS_ADDRESS"] = address
        env["NOTIFY_SOCKET"] = nil
        daemon.environment = env
        try daemon.run()
        return daemon
    }

    func measure(
        address: String, clients: Int, seconds: Double, _ body: @escaping @Sendable (BusClient) throws -> Void
    ) throws -> Double {
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
