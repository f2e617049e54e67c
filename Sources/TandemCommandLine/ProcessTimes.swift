import Foundation

/// CPU time of processes and of the machine, from /proc (the benchmark's figures, and the tests
/// that say a process stayed near idle).
package enum ProcessTimes {
    /// User + system CPU seconds a process has used (all its threads); 0 when it is gone.
    package static func cpuSeconds(_ pid: Int32) -> Double {
        guard let stat = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8),
            let close = stat.lastIndex(of: ")")
        else { return 0 }
        let fields = stat[stat.index(after: close)...].split(separator: " ")
        // After the command: state is field 3; utime and stime are fields 14 and 15.
        guard fields.count > 12, let u = Double(fields[11]), let s = Double(fields[12]) else { return 0 }
        return (u + s) / Double(sysconf(Int32(_SC_CLK_TCK)))
    }

    /// Machine-wide (busy, total) CPU time from /proc/stat, in clock ticks.
    package static func machine() -> (busy: Double, total: Double) {
        guard let stat = try? String(contentsOfFile: "/proc/stat", encoding: .utf8),
            let line = stat.split(separator: "\n").first
        else { return (0, 0) }
        let v = line.split(separator: " ").dropFirst().compactMap { Double($0) }
        guard v.count >= 5 else { return (0, 0) }
        let total = v.prefix(8).reduce(0, +)
        return (total - v[3] - v[4], total)  // idle and iowait are not busy
    }
}
