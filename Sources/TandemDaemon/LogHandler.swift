import Foundation
import Logging

/// Writes one line per message to stderr with a syslog priority prefix (`<6>...`), which
/// journald turns into the message's priority.
public struct PriorityPrefixLogHandler: LogHandler {
    public var metadata: Logger.Metadata = [:]
    /// The process-wide level (changed at run time through org.freedesktop.LogControl1),
    /// raised for this logger by its own floor.
    public var logLevel: Logger.Level {
        get { max(LogLevelControl.shared.level, floor) }
        set { floor = newValue }
    }
    var floor: Logger.Level = .trace
    let label: String

    public init(label: String) { self.label = label }

    public subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { metadata[key] }
        set { metadata[key] = newValue }
    }

    static func priority(_ level: Logger.Level) -> Int {
        switch level {
        case .trace, .debug: return 7
        case .info: return 6
        case .notice: return 5
        case .warning: return 4
        case .error: return 3
        case .critical: return 2
        }
    }

    public func log(event: LogEvent) {
        var all = metadata
        if let m = event.metadata { all.merge(m) { $1 } }
        var line = "<\(Self.priority(event.level))>\(event.message)"
        if !all.isEmpty {
            line += " " + all.sorted { $0.key < $1.key }.map { "\($0.key)=\($0.value)" }.joined(separator: " ")
        }
        line += "\n"
        FileHandle.standardError.write(Data(line.utf8))
    }
}

/// The daemon's log level, shared by every logger and settable while running.
public final class LogLevelControl: @unchecked Sendable {
    public static let shared = LogLevelControl()
    private let lock = NSLock()
    private var _level: Logger.Level = .info
    public var level: Logger.Level {
        get { lock.withLock { _level } }
        set { lock.withLock { _level = newValue } }
    }

    static let syslogNames: [(String, Logger.Level)] = [
        ("emerg", .critical), ("alert", .critical), ("crit", .critical), ("err", .error),
        ("warning", .warning), ("notice", .notice), ("info", .info), ("debug", .debug),
    ]

    /// The syslog name of the current level (LogControl1's LogLevel).
    public var syslogName: String {
        let l = level
        return Self.syslogNames.last { $0.1 == l }?.0 ?? (l == .trace ? "debug" : "info")
    }

    public func set(syslogName: String) -> Bool {
        guard let l = Self.syslogNames.first(where: { $0.0 == syslogName })?.1 else { return false }
        level = l
        return true
    }
}
