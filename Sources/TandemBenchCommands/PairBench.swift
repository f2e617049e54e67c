import Foundation
import TandemBusClient
import TandemCommandLine
import TandemCore
import TandemLicensing
import TandemPair
import TandemPeer

extension TandemBench {
    /// `tandem-bench --pair`: two tandemd and a witness on loopback with the shipped timing
    /// (`PairSettings.default…`: tandemd.conf and tandem-witness set nothing). Prints the
    /// primary's Acquire+Release rate standalone and then paired (same node, same run), and the
    /// time from kill -9 of the serving primary to the first successful Acquire on the backup, over `runs` failovers
    /// (each followed by a restart and failback).
    func runPair() throws {
        let work = dir + "/tandem-bench-pair-\(getpid())"
        let bins = binaries
        let dirs = [work + "/a", work + "/b", work + "/w", work + "/keys"]
        for d in dirs { try FileManager.default.createDirectory(atPath: d, withIntermediateDirectories: true) }
        defer { try? FileManager.default.removeItem(atPath: work) }
        let keyFile = work + "/keys/pair.key"
        try PairKey.generate().write(path: keyFile)
        let vendor = PrivateSigningKey()
        try vendor.publicKey.fileText.write(toFile: work + "/keys/bench.pub", atomically: true, encoding: .utf8)
        let base = Int.random(in: 20_000...60_000)
        let (portA, portB, portW) = (base, base + 1, base + 2)

        let witness = Process()
        witness.executableURL = URL(fileURLWithPath: bins + "/tandem-witness")
        witness.arguments = ["--listen", "127.0.0.1:\(portW)", "--key-file", keyFile, "--state-dir", work + "/w"]
        _ = FileManager.default.createFile(atPath: work + "/w/witness.log", contents: nil)
        witness.standardError = FileHandle(forWritingAtPath: work + "/w/witness.log")
        try witness.run()
        defer { kill(witness.processIdentifier, SIGKILL); witness.waitUntilExit() }

        var buses: [Process] = []
        defer { for b in buses { kill(b.processIdentifier, SIGKILL); b.waitUntilExit() } }
        var addresses: [String] = []
        for (node, port) in [("a", portA), ("b", portB)] {
            let d = work + "/" + node
            let (bus, address) = try Self.startBus(dir: d)
            buses.append(bus)
            addresses.append(address)
            try """
            [Server]
            VendorKeys=\(work)/keys
            Listen=
            [Pair]
            KeyFile=\(keyFile)
            Listen=127.0.0.1:\(port)
            Witness=127.0.0.1:\(portW)
            """.write(toFile: d + "/tandemd.conf", atomically: true, encoding: .utf8)
        }
        var daemons = [
            try Self.startTandemd(bins: bins, dir: work + "/a", address: addresses[0]),
            try Self.startTandemd(bins: bins, dir: work + "/b", address: addresses[1])
        ]
        defer { for d in daemons where d.isRunning { kill(d.processIdentifier, SIGKILL); d.waitUntilExit() } }
        let ca = try BusClient(.address(addresses[0])), cb = try BusClient(.address(addresses[1]))
        func wait(_ what: String, _ seconds: Double, _ cond: () throws -> Bool) throws {
            let end = Date().addingTimeInterval(seconds)
            while Date() < end {
                if (try? cond()) == true { return }
                usleep(10_000)
            }
            var tails = ""
            for node in ["a/tandemd", "b/tandemd", "w/witness"] {
                let log = (try? String(contentsOfFile: work + "/\(node).log", encoding: .utf8)) ?? ""
                tails += "\n--- \(node)/tandemd.log:\n" + log.split(separator: "\n").suffix(15).joined(separator: "\n")
            }
            throw CLIFailure("timed out waiting for \(what)\(tails)")
        }
        try wait("tandemd", 10) { try ca.get(.serverId) != .string("") && cb.get(.serverId) != .string("") }
        let idA = try ca.get(.serverId).stringValue ?? "", idB = try cb.get(.serverId).stringValue ?? ""

        // Standalone baseline on the node that becomes the primary.
        let solo = try vendor.sign(
            LicenseDocument(
                id: "SOLO", product: "Bench", feature: "bench", seats: 1_000_000, notAfter: nil,
                issuedTo: [idA], issuedAt: "2026-01-01", keyId: ""))
        _ = try ca.call(.activateLicense, [.string(solo.text)])
        let pairOp: @Sendable (BusClient) throws -> Void = { c in
            let r = try c.call(.acquire, [.string("bench"), .uint32(1), .string("bench"), .vardict([])])
            _ = try c.call(.release, [r[0]])
        }
        let solo1 = try measure(address: addresses[0], clients: 1, seconds: seconds, pairOp)
        let pids = [daemons[0].processIdentifier, daemons[1].processIdentifier, buses[0].processIdentifier, getpid()]
        let soloCPU0 = pids.map(ProcessTimes.cpuSeconds), soloMachine0 = ProcessTimes.machine()
        let soloN = try measure(address: addresses[0], clients: clients, seconds: seconds, pairOp)
        let soloCPU1 = pids.map(ProcessTimes.cpuSeconds), soloMachine1 = ProcessTimes.machine()
        let soloPerPair = (0..<pids.count).map { (soloCPU1[$0] - soloCPU0[$0]) / (soloN * seconds) * 1e6 }
        _ = try ca.call(.deactivateLicense, [.string("SOLO")])

        // Pair them and measure the same on the primary.
        _ = try cb.call(.prepareBackup, [.string("127.0.0.1:\(portA)")])
        _ = try ca.call(.enableBackup, [.string("127.0.0.1:\(portB)")])
        try wait("paired-and-available", 20) {
            try ca.get(.pairStatus) == .string("paired-and-available") && ca.get(.serving) == .bool(true)
        }
        let both = try vendor.sign(
            LicenseDocument(
                id: "PAIR", product: "Bench", feature: "bench", seats: 1_000_000, notAfter: nil,
                issuedTo: [idA, idB], issuedAt: "2026-01-01", keyId: ""))
        _ = try ca.call(.activateLicense, [.string(both.text)])
        let timing = String(
            format: "HeartbeatSec=%g, FailoverTimeoutSec=%g, witness lease %.3g s",
            Double(PairSettings.defaultHeartbeatUSec) / 1e6, Double(PairSettings.defaultFailoverTimeoutUSec) / 1e6,
            Double(PairSettings.defaultWitnessLeaseUSec) / 1e6)
        if let soak {
            let r = try soakPair(primary: ca, backup: cb, primaryAddress: addresses[0], seconds: soak)
            print(
                String(
                    format: """
                        Tandem pair soak (loopback, \(timing))
                          %.0f s, %d CPU hogs and %d clients on the primary: machine %.0f%% busy, \
                        %.0f pairs/s, %d refused
                          elections (epoch changes, target 0): %d
                          samples every 50 ms: %d; primary not serving in %d
                        """, r.seconds, r.hogs, clients, r.busyPercent, r.pairsPerSecond, r.refusedCalls,
                    r.elections, r.samples, r.primaryNotServing))
            print("  pair status (target: paired-and-available in every sample):")
            print("    primary: \(Self.histogram(r.statuses[0]))\n    backup: \(Self.histogram(r.statuses[1]))")
            return
        }
        let paired1 = try measure(address: addresses[0], clients: 1, seconds: seconds, pairOp)
        let cpu0 = pids.map(ProcessTimes.cpuSeconds), machine0 = ProcessTimes.machine()
        let pairedN = try measure(address: addresses[0], clients: clients, seconds: seconds, pairOp)
        let cpu1 = pids.map(ProcessTimes.cpuSeconds), machine1 = ProcessTimes.machine()
        let perPair = (0..<pids.count).map { (cpu1[$0] - cpu0[$0]) / (pairedN * seconds) * 1e6 }

        // Failovers: kill -9 the serving primary, time the first Acquire the backup grants,
        // restart the primary and wait for the failback.
        var times: [Double] = []
        for run in 0..<runs {
            try wait("failback before run \(run + 1)", 30) {
                try ca.get(.serving) == .bool(true) && ca.get(.pairStatus) == .string("paired-and-available")
                    && cb.get(.pairStatus) == .string("paired-and-available")
            }
            // Let a heartbeat or two pass so that runs do not start in step with the heartbeat.
            usleep(UInt32.random(in: 0...1_000_000))
            kill(daemons[0].processIdentifier, SIGKILL)
            daemons[0].waitUntilExit()
            let killed = Date()
            var granted = false
            while !granted {
                if let r = try? cb.call(.acquire, [.string("bench"), .uint32(1), .string("failover"), .vardict([])]) {
                    granted = true
                    _ = try? cb.call(.release, [r[0]])
                } else {
                    usleep(5_000)
                }
                if Date().timeIntervalSince(killed) > 30 {
                    throw CLIFailure("run \(run + 1): the backup did not serve within 30 s")
                }
            }
            times.append(Date().timeIntervalSince(killed))
            daemons[0] = try Self.startTandemd(bins: bins, dir: work + "/a", address: addresses[0])
        }
        let sorted = times.sorted()
        let median =
            sorted.isEmpty
            ? 0
            : (sorted.count % 2 == 1
                ? sorted[sorted.count / 2] : (sorted[sorted.count / 2 - 1] + sorted[sorted.count / 2]) / 2)
        // What the machine's cores allow for each, from the CPU each pair took in this run: here
        // both nodes share the cores, so the backup's work is taken from the primary's.
        let cores = Double(ProcessInfo.processInfo.activeProcessorCount)
        let soloCeiling = cores / soloPerPair.reduce(0, +) * 1e6, pairedCeiling = cores / perPair.reduce(0, +) * 1e6
        print(
            String(
                format: """
                    Tandem pair benchmark (loopback, \(timing), %.0f s per rate)
                      Acquire+Release pairs on the primary, standalone, 1 client:   %.0f/s
                      Acquire+Release pairs on the primary, standalone, %d clients:  %.0f/s
                        CPU per pair: tandemd %.0f µs, dbus-daemon %.0f µs, bench clients %.0f µs; machine %.0f%% busy
                      Acquire+Release pairs on the primary, paired, 1 client:       %.0f/s  = %.2fx standalone
                      Acquire+Release pairs on the primary, paired, %d clients:      %.0f/s  = %.2fx standalone
                        CPU per pair: primary %.0f µs, backup %.0f µs, primary's dbus-daemon %.0f µs, \
                    bench clients %.0f µs; machine %.0f%% busy
                      CPU ceilings, %.0f cores / CPU per pair: standalone %.0f/s, paired %.0f/s = %.2fx standalone \
                    (both nodes on this machine's cores)
                      failover, kill -9 of the primary to the first Acquire granted by the backup, %d runs:
                        median %.2f s, min %.2f s, max %.2f s (targets: median 1.0 s, max 1.5 s)
                    """, seconds, solo1, clients, soloN, soloPerPair[0], soloPerPair[2], soloPerPair[3],
                busyPercent(soloMachine0, soloMachine1), paired1, paired1 / solo1, clients, pairedN, pairedN / soloN,
                perPair[0], perPair[1], perPair[2], perPair[3], busyPercent(machine0, machine1),
                cores, soloCeiling, pairedCeiling, pairedCeiling / soloCeiling,
                times.count, median, sorted.first ?? 0, sorted.last ?? 0))
    }
}
