import CSystemd
import Foundation
import Logging
import TandemCore

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
    /// The journal's SYSLOG_IDENTIFIER= (the program's name).
    let identifier: String

    public init(label: String, identifier: String) {
        self.label = label
        self.identifier = identifier
    }

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

    /// A metadata value as it may stand after `key=` on a line: quoted unless it is plain, so
    /// that client text with spaces or `=` cannot pass for fields of its own.
    static func field(_ value: String) -> String {
        // Letters, digits and - _ . : / , @ + [ ] (ids, addresses, numbers); a switch, not a set:
        // every field of every log line passes here.
        let plain =
            !value.isEmpty
            && value.utf8.allSatisfy { b in
                switch b {
                case UInt8(ascii: "a")...UInt8(ascii: "z"), UInt8(ascii: "A")...UInt8(ascii: "Z"),
                    UInt8(ascii: "0")...UInt8(ascii: "9"), UInt8(ascii: "-"), UInt8(ascii: "_"), UInt8(ascii: "."),
                    UInt8(ascii: ":"), UInt8(ascii: "/"), UInt8(ascii: ","), UInt8(ascii: "@"), UInt8(ascii: "+"),
                    UInt8(ascii: "["), UInt8(ascii: "]"):
                    return true
                default:
                    return false
                }
            }
        return plain ? value : quoted(value, limit: 512)
    }

    /// True when stderr is connected to the journal (systemd sets $JOURNAL_STREAM): then each
    /// message goes to the journal directly, with its metadata as fields (LEASE_ID=, ...).
    static let toJournal: Bool = {
        guard let v = ProcessInfo.processInfo.environment["JOURNAL_STREAM"] else { return false }
        let parts = v.split(separator: ":")
        var st = stat()
        guard parts.count == 2, fstat(2, &st) == 0 else { return false }
        return UInt64(parts[0]) == UInt64(st.st_dev) && UInt64(parts[1]) == UInt64(st.st_ino)
    }()

    static func journalField(_ key: String) -> String? {
        let name = key.uppercased().map { ($0.isLetter || $0.isNumber) ? $0 : "_" }
        guard let first = name.first, first != "_", !first.isNumber else { return nil }
        return String(name)
    }

    func sendToJournal(_ message: String, priority: Int, metadata: Logger.Metadata) {
        var fields = ["MESSAGE=\(message)", "PRIORITY=\(priority)", "SYSLOG_IDENTIFIER=\(identifier)"]
        for (k, v) in metadata.sorted(by: { $0.key < $1.key }) {
            if let f = Self.journalField(k) { fields.append("\(f)=\(v)") }
        }
        let buffers = fields.map { strdup($0)! }
        defer { for b in buffers { free(b) } }
        var iov = buffers.map { iovec(iov_base: UnsafeMutableRawPointer($0), iov_len: strlen($0)) }
        _ = iov.withUnsafeMutableBufferPointer { sd_journal_sendv($0.baseAddress, Int32($0.count)) }
    }

    public func log(event: LogEvent) {
        var all = metadata
        if let m = event.metadata { all.merge(m) { $1 } }
        // Messages and values carry client text (lease ids, client names): escaped, a value
        // can neither start a line of its own (with a `<N>` priority) nor hide what it holds.
        let message = escapingControlCharacters("\(event.message)", keepBackslashes: true)
        all = all.mapValues { .string(escapingControlCharacters("\($0)", keepBackslashes: true)) }
        if Self.toJournal {
            sendToJournal(message, priority: Self.priority(event.level), metadata: all)
            return
        }
        var line = "<\(Self.priority(event.level))>\(message)"
        if !all.isEmpty {
            line +=
                " "
                + all.sorted { $0.key < $1.key }.map { "\($0.key)=\(Self.field("\($0.value)"))" }.joined(separator: " ")
        }
        line += "\n"
        FileHandle.standardError.write(Data(line.utf8))
    }
}

/// The process's log level, shared by every logger and settable while running.
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
        ("warning", .warning), ("notice", .notice), ("info", .info), ("debug", .debug)
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
