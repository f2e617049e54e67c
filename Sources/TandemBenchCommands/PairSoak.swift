import Foundation
import TandemBusClient
import TandemCommandLine

extension TandemBench {
    /// What `--soak` saw: the pair's elections and the primary's gaps while the machine was
    /// saturated.
    struct SoakResult {
        var seconds = 0.0
        var hogs = 0
        var busyPercent = 0.0
        var pairsPerSecond = 0.0
        var samples = 0
        /// Epoch changes seen on either node: each is an election, so a failover or a re-election.
        var elections = 0
        var primaryNotServing = 0
        /// How often each node reported each pair status: [primary's, backup's].
        var statuses: [[String: Int]] = [[:], [:]]
        /// Acquire+Release pairs of the load that failed (NotServing during an election).
        var refusedCalls = 0
    }

    /// `tandem-bench --pair --soak S`: the formed pair under both cores saturated by CPU hogs
    /// (two busy processes per core, at the same priority as tandemd) and `clients` Acquire+Release
    /// clients on the primary, for S seconds. The pair's state is sampled every 50 ms over its
    /// bus; with the shipped timing no election may happen (a spurious failover costs
    /// availability, not correctness, but must not happen under ordinary load).
    func soakPair(primary: BusClient, backup: BusClient, primaryAddress: String, seconds: Double) throws -> SoakResult {
        var result = SoakResult()
        result.seconds = seconds
        result.hogs = 2 * ProcessInfo.processInfo.activeProcessorCount
        var hogs: [Process] = []
        defer {
            for h in hogs {
                kill(h.processIdentifier, SIGKILL)
                h.waitUntilExit()
            }
        }
        for _ in 0..<result.hogs {
            let h = Process()
            h.executableURL = URL(fileURLWithPath: "/bin/sh")
            h.arguments = ["-c", "while :; do :; done"]
            try h.run()
            hogs.append(h)
        }
        var lastEpochs = [try primary.get(.epoch), try backup.get(.epoch)]
        // The load keeps going through refusals (a failover would bring some): they are counted.
        final class Load: @unchecked Sendable {
            let lock = NSLock()
            var done = 0, refused = 0
            var failure: Error?
        }
        let load = Load()
        let group = DispatchGroup()
        let end = Date().addingTimeInterval(seconds)
        let machine0 = ProcessTimes.machine()
        for _ in 0..<clients {
            group.enter()
            Thread.detachNewThread {
                defer { group.leave() }
                var done = 0, refused = 0
                do {
                    let c = try BusClient(.address(primaryAddress))
                    while Date() < end {
                        do {
                            let r = try c.call(.acquire, [.string("bench"), .uint32(1), .string("soak"), .vardict([])])
                            _ = try c.call(.release, [r[0]])
                            done += 1
                        } catch {
                            refused += 1
                            usleep(10_000)
                        }
                    }
                } catch { load.lock.withLock { load.failure = error } }
                load.lock.withLock {
                    load.done += done
                    load.refused += refused
                }
            }
        }
        while Date() < end {
            usleep(50_000)
            let epochs = [try primary.get(.epoch), try backup.get(.epoch)]
            result.elections += zip(epochs, lastEpochs).filter { $0 != $1 }.count > 0 ? 1 : 0
            lastEpochs = epochs
            result.samples += 1
            if try primary.get(.serving) != .bool(true) { result.primaryNotServing += 1 }
            for (i, node) in [primary, backup].enumerated() {
                guard case .string(let status) = try node.get(.pairStatus) else { continue }
                result.statuses[i][status, default: 0] += 1
            }
        }
        group.wait()
        result.busyPercent = busyPercent(machine0, ProcessTimes.machine())
        if let f = load.failure { throw CLIFailure("soak load: \(f)") }
        result.pairsPerSecond = Double(load.done) / seconds
        result.refusedCalls = load.refused
        return result
    }

    /// "paired-and-available 10170, recovering 8": most frequent first.
    static func histogram(_ counts: [String: Int]) -> String {
        counts.sorted { ($0.value, $1.key) > ($1.value, $0.key) }.map { "\($0.key) \($0.value)" }
            .joined(separator: ", ")
    }
}
