import CSystemd
import Foundation

/// What a service tells systemd (sd_notify; nothing happens without $NOTIFY_SOCKET).
public enum ServiceNotify {
    public static func ready(status: String) { sd_notify(0, "READY=1\nSTATUS=\(status)") }
    public static func status(_ line: String) { sd_notify(0, "STATUS=\(line)") }
    public static func reloading(status: String) { sd_notify(0, "RELOADING=1\nSTATUS=\(status)") }
    public static func stopping(status: String) { sd_notify(0, "STOPPING=1\nSTATUS=\(status)") }
}

/// Where a service keeps its state: the directory given on the command line, else systemd's
/// $STATE_DIRECTORY (its first entry), else `fallback`.
public func stateDirectory(given: String?, fallback: String) -> String {
    if let given { return given }
    if let env = ProcessInfo.processInfo.environment["STATE_DIRECTORY"], !env.isEmpty {
        return String(env.split(separator: ":").first ?? Substring(env))
    }
    return fallback
}

/// The system's clocks in microseconds.
public enum SystemClock {
    public static func realtimeUSec() -> UInt64 { read(CLOCK_REALTIME) }
    public static func monotonicUSec() -> UInt64 { read(CLOCK_MONOTONIC) }

    private static func read(_ id: Int32) -> UInt64 {
        var ts = timespec()
        clock_gettime(clockid_t(id), &ts)
        return UInt64(ts.tv_sec) * 1_000_000 + UInt64(ts.tv_nsec / 1000)
    }
}

/// Why a service cannot start or go on (its configuration, its key, its state files), in one
/// line: the daemons log it and exit non-zero.
public struct ServiceError: Error, CustomStringConvertible {
    public let description: String
    public init(_ description: String) { self.description = description }
}

/// The open-file limit a service runs with.
public enum FileLimit {
    /// Raises the soft limit to the hard one, as systemd recommends for services that never use
    /// `select()` (tandemd's loops are epoll: sd-event and SwiftNIO). Returns the limits now, or
    /// nil (and leaves them) when they cannot be read or set.
    @discardableResult
    public static func raiseToHard() -> (soft: UInt64, hard: UInt64)? {
        var limit = rlimit()
        guard getrlimit(Int32(RLIMIT_NOFILE.rawValue), &limit) == 0 else { return nil }
        if limit.rlim_cur < limit.rlim_max {
            var raised = limit
            raised.rlim_cur = limit.rlim_max
            guard setrlimit(Int32(RLIMIT_NOFILE.rawValue), &raised) == 0 else {
                return (UInt64(limit.rlim_cur), UInt64(limit.rlim_max))
            }
            limit = raised
        }
        return (UInt64(limit.rlim_cur), UInt64(limit.rlim_max))
    }
}
