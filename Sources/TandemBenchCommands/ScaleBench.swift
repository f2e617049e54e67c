import Foundation
import Logging
import TandemBusClient
import TandemCommandLine
import TandemCore
import TandemLicensing
import TandemStore

/// `tandem-bench --scale`: tandemd with many live leases. 100,000 leases taken over D-Bus (RSS
/// then, and after a restart that loads the same state; HTTP renewals with 1,000 and with
/// 100,000 live leases), then a million written into its store (start-up to READY and RSS).
extension TandemBench {
    func runScale() throws {
        let work = dir + "/tandem-bench-scale-\(getpid())"
        try FileManager.default.createDirectory(atPath: work + "/keys", withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: work) }
        let bins = binaries
        let (bus, address) = try Self.startBus(dir: work)
        defer { kill(bus.processIdentifier, SIGKILL); bus.waitUntilExit() }
        let key = try Self.writeDaemonConfig(work: work, extra: "MaxLeaseSec=864000\n")

        var (daemon, startSec) = try startAndWait(bins: bins, work: work, address: address)
        defer {
            if daemon.isRunning {
                kill(daemon.processIdentifier, SIGTERM)
                daemon.waitUntilExit()
            }
        }
        let admin = try BusClient(.address(address))
        try Self.activateBenchLicense(admin, key)
        let base = "http://" + (try admin.get(.listenAddresses).arrayValue?.first?.stringValue ?? "")

        // Renewals of one lease over HTTP, with 1,000 live leases and with 100,000.
        let renewed = try httpLease(base)
        // Each with a request id, as TandemClient takes every lease.
        let acquire: @Sendable (BusClient) throws -> Void = { c in
            let options: [(String, BusValue)] = [
                ("ttl_usec", .uint64(864_000_000_000)), ("request_id", .string(UUID().uuidString.lowercased()))
            ]
            _ = try c.call(.acquire, [.string("bench"), .uint32(1), .string("bench"), .vardict(options)])
        }
        try fill(address: address, to: 1_000, acquire)
        let renewSmall = try renewRate(base, renewed)
        let t0 = Date()
        try fill(address: address, to: 100_000, acquire)
        let fillRate = 99_000 / Date().timeIntervalSince(t0)
        let renewLarge = try renewRate(base, renewed)
        let rssBefore = Self.rssMB(daemon.processIdentifier)

        // The same state loaded by a restart.
        kill(daemon.processIdentifier, SIGTERM)
        daemon.waitUntilExit()
        (daemon, startSec) = try startAndWait(bins: bins, work: work, address: address)
        let leases = try admin.call(.getUsage).first?.arrayValue?.first.flatMap(UsageRow.init)?.inUse ?? 0
        let rssAfter = Self.rssMB(daemon.processIdentifier)
        let restart100k = startSec
        // The engine and the store's history share the loaded state until the first change:
        // RSS after one, too.
        let one = try admin.call(.acquire, [.string("bench"), .uint32(1), .string("bench"), .vardict([])])
        _ = try admin.call(.release, [one[0]])
        let rssAfterChange = Self.rssMB(daemon.processIdentifier)

        // A million: written into the store while tandemd is stopped, as a restart would find them.
        kill(daemon.processIdentifier, SIGTERM)
        daemon.waitUntilExit()
        try writeLeases(path: work + "/state/tandem.db", upTo: 999_999)  // one seat of the million left
        (daemon, startSec) = try startAndWait(bins: bins, work: work, address: address)
        let million = try admin.call(.getUsage).first?.arrayValue?.first.flatMap(UsageRow.init)?.inUse ?? 0
        let one2 = try admin.call(.acquire, [.string("bench"), .uint32(1), .string("bench"), .vardict([])])
        _ = try admin.call(.release, [one2[0]])
        let rssMillion = Self.rssMB(daemon.processIdentifier)
        kill(daemon.processIdentifier, SIGTERM)
        daemon.waitUntilExit()

        func f(_ x: Double, _ digits: Int = 0) -> String { String(format: "%.\(digits)f", x) }
        print(
            """
            tandem-bench --scale (disk: \(dir))
              filling: 99,000 Acquire calls over D-Bus, \(clients) clients:  \(f(fillRate))/s
              RSS with 100,000 live leases (taken over D-Bus):         \(f(rssBefore)) MB
              RSS after a restart that loads them (\(leases) in use):   \(f(rssAfter)) MB  = \
            \(f(rssAfter / rssBefore, 2))x
              RSS after the first change after it:                      \(f(rssAfterChange)) MB  = \
            \(f(rssAfterChange / rssBefore, 2))x
              start-up to the bus name answering, 100,000 leases:      \(f(restart100k, 2)) s
              HTTP renewals of one lease, 1 connection, 1,000 live leases:   \(f(renewSmall))/s
              HTTP renewals of one lease, 1 connection, 100,000 live leases: \(f(renewLarge))/s  = \
            \(f(renewLarge / renewSmall, 2))x
              1,000,000 live leases (\(million) in use): RSS after a change \(f(rssMillion)) MB, \
            start-up to the bus name answering \(f(startSec, 2)) s
            """)
    }

    /// Starts tandemd and waits until it answers on the bus (it owns its name last, after
    /// loading the state: READY in systemd's terms). Returns the process and the seconds taken.
    func startAndWait(bins: String, work: String, address: String) throws -> (Process, Double) {
        let t = Date()
        let daemon = try Self.startTandemd(bins: bins, dir: work, address: address)
        let c = try BusClient(.address(address))
        while (try? c.get(.serverId)) == nil {
            guard daemon.isRunning, Date().timeIntervalSince(t) < 120 else {
                throw CLIFailure("tandemd did not start (see \(work)/tandemd.log)")
            }
            usleep(2_000)
        }
        return (daemon, Date().timeIntervalSince(t))
    }

    /// Acquires until the feature has `count` seats in use, with `clients` D-Bus clients.
    func fill(address: String, to count: UInt32, _ acquire: @escaping @Sendable (BusClient) throws -> Void) throws {
        let c = try BusClient(.address(address))
        func inUse() throws -> UInt32 {
            try c.call(.getUsage).first?.arrayValue?.first.flatMap(UsageRow.init)?.inUse ?? 0
        }
        while try inUse() < count {
            let missing = Int(count - (try inUse()))
            let perClient = (missing + clients - 1) / clients
            let group = DispatchGroup()
            for _ in 0..<clients {
                group.enter()
                Thread.detachNewThread {
                    defer { group.leave() }
                    guard let c = try? BusClient(.address(address)) else { return }
                    for _ in 0..<perClient { try? acquire(c) }
                }
            }
            group.wait()
        }
    }

    /// Writes leases into a stopped tandemd's store until it holds `count`, in commits of 20,000.
    func writeLeases(path: String, upTo count: Int) throws {
        let store = try Store(path: path, logger: Logger(label: "bench") { _ in SwiftLogNoOpLogHandler() })
        let (base, tail) = try store.loadLog()
        var state = base.state
        for e in tail { state.apply(e.change) }
        let now = USec(Date().timeIntervalSince1970 * 1e6), ttl: USec = 864_000 * usecPerSecond
        var n = state.leases.count
        while n < count {
            let batch = (n..<min(count, n + 20_000)).map { i in
                Change.leaseGranted(
                    Lease(
                        id: "lease-scale-\(i)", feature: "bench", client: "bench-\(i % 1000)", count: 1, uid: 0,
                        holder: Holder(user: "user-\(i % 500)", host: "host-\(i % 200)"),
                        requestId: UUID().uuidString.lowercased(),
                        acquiredUSec: now, expiresUSec: now + ttl, ttlUSec: ttl, epoch: state.epoch))
            }
            try store.commit(batch, epoch: state.epoch, now: now)
            n += batch.count
        }
    }

    /// A lease taken over HTTP (so that the network API may renew it).
    func httpLease(_ base: String) throws -> String {
        let r = try curl([
            "-s", "-X", "POST", "-H", "Content-Type: application/json", "--data-binary",
            #"{"feature":"bench","client":"renewer","ttl_sec":86400}"#, base + "/v1/leases"
        ])
        guard let id = r.split(separator: "\"").drop(while: { $0 != "lease_id" }).dropFirst(2).first else {
            throw CLIFailure("no lease over HTTP: \(r)")
        }
        return String(id)
    }

    /// Renewals per second of one lease over one keep-alive connection (wrk).
    func renewRate(_ base: String, _ lease: String) throws -> Double {
        guard FileManager.default.isExecutableFile(atPath: "/usr/bin/wrk") else { return .nan }
        let script = NSTemporaryDirectory() + "/tandem-renew-\(getpid()).lua"
        try "wrk.method = \"POST\"\n".write(toFile: script, atomically: true, encoding: .utf8)
        defer { try? FileManager.default.removeItem(atPath: script) }
        return try wrk([
            "-t", "1", "-c", "1", "-d", "\(Int(seconds))s", "-s", script, base + "/v1/leases/\(lease)/renew"
        ])
    }

    func curl(_ args: [String]) throws -> String {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: "/usr/bin/curl")
        p.arguments = args
        let out = Pipe()
        p.standardOutput = out
        try p.run()
        let data = out.fileHandleForReading.readDataToEndOfFile()
        p.waitUntilExit()
        return String(decoding: data, as: UTF8.self)
    }

    /// The resident set of a process, in MB (VmRSS).
    static func rssMB(_ pid: Int32) -> Double {
        let status = (try? String(contentsOfFile: "/proc/\(pid)/status", encoding: .utf8)) ?? ""
        let line = status.split(separator: "\n").first { $0.hasPrefix("VmRSS:") } ?? ""
        return (Double(line.split(separator: " ").dropFirst().first ?? "") ?? 0) / 1024
    }
}
