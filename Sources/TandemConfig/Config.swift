import Foundation
import TandemPair
import TandemCore

/// A problem in a configuration file, with its place.
public struct ConfigError: Error, CustomStringConvertible, Sendable {
    public let file: String
    public let line: Int
    public let reason: String
    public var description: String { line > 0 ? "\(file):\(line): \(reason)" : "\(file): \(reason)" }
}

/// A systemd-style INI file: `[Section]`, `Key=Value`, `#`/`;` comments, later assignments win.
public struct IniFile: Sendable {
    public struct Entry: Sendable {
        public var section: String
        public var key: String
        public var value: String
        public var file: String
        public var line: Int
    }
    public var entries: [Entry] = []

    public init() {}

    public mutating func parse(_ text: String, file: String) throws(ConfigError) {
        var section: String?
        for (i, raw) in text.split(separator: "\n", omittingEmptySubsequences: false).enumerated() {
            let line = raw.trimmingCharacters(in: .whitespaces)
            let n = i + 1
            if line.isEmpty || line.hasPrefix("#") || line.hasPrefix(";") { continue }
            if line.hasPrefix("[") {
                guard line.hasSuffix("]"), line.count > 2 else {
                    throw ConfigError(file: file, line: n, reason: "malformed section header '\(line)'")
                }
                section = String(line.dropFirst().dropLast())
                continue
            }
            guard let eq = line.firstIndex(of: "=") else {
                throw ConfigError(file: file, line: n, reason: "expected 'Key=Value', got '\(line)'")
            }
            guard let section else { throw ConfigError(file: file, line: n, reason: "assignment outside of a section") }
            let key = line[..<eq].trimmingCharacters(in: .whitespaces)
            let value = line[line.index(after: eq)...].trimmingCharacters(in: .whitespaces)
            guard !key.isEmpty else { throw ConfigError(file: file, line: n, reason: "empty key") }
            entries.append(Entry(section: section, key: key, value: value, file: file, line: n))
        }
    }

    /// Reads `path` (it may be missing when `required` is false) and then `DROPINS/*.conf`
    /// in lexical order (`path.d` unless told).
    public static func load(path: String, required: Bool, dropins: String? = nil) throws(ConfigError) -> IniFile {
        var ini = IniFile()
        if FileManager.default.fileExists(atPath: path) {
            guard let text = try? String(contentsOfFile: path, encoding: .utf8) else {
                throw ConfigError(file: path, line: 0, reason: "cannot read file")
            }
            try ini.parse(text, file: path)
        } else if required {
            throw ConfigError(file: path, line: 0, reason: "no such file")
        }
        let dropins = dropins ?? path + ".d"
        if let names = try? FileManager.default.contentsOfDirectory(atPath: dropins) {
            for name in names.filter({ $0.hasSuffix(".conf") }).sorted() {
                let f = (dropins as NSString).appendingPathComponent(name)
                guard let text = try? String(contentsOfFile: f, encoding: .utf8) else {
                    throw ConfigError(file: f, line: 0, reason: "cannot read file")
                }
                try ini.parse(text, file: f)
            }
        }
        return ini
    }
}

/// tandemd's settings (`[Server]` section of tandemd.conf).
public struct DaemonConfig: Sendable, Equatable {
    public var vendorKeys: String? = nil
    public var adminGroup: String = "tandem-admin"
    public var defaultLeaseSec: UInt64 = 300
    public var maxLeaseSec: UInt64 = 86_400
    /// Addresses of the network API; empty = no network API.
    public var listen: [String] = ["127.0.0.1:7390"]
    public var clientTokenFile: String? = nil
    public var tlsCertificate: String? = nil
    public var tlsKey: String? = nil
    /// What clients may hold of the network API (connections, idle time).
    public var connectionLimits = ConnectionLimits()
    /// How long a request's body may take to arrive after its head.
    public var requestTimeoutSec: UInt64 = 10
    /// `[Pair]`: the pair link and the protocol's timing.
    public var pair = PairConfig()
    /// How long the usage history keeps sessions, denials and the usage series (a year's true-up
    /// and some).
    public var historyDays: UInt64 = 400
    /// The usage policy (`Policy=`; its drop-ins are `policy.d/*.conf` beside it).
    public var policy: String = PolicyFile.defaultPath

    public init() {}

    public static let defaultPath = "/etc/tandem/tandemd.conf"
    public static let knownSections: Set<String> = ["Server", "Pair"]

    public static func parse(_ ini: IniFile) throws(ConfigError) -> DaemonConfig {
        var c = DaemonConfig()
        var place: (String, Int) = ("", 0)
        var listenSet = false
        func seconds(_ e: IniFile.Entry) throws(ConfigError) -> UInt64 {
            let v = e.value.hasSuffix("s") ? String(e.value.dropLast()) : e.value
            guard let n = UInt64(v), n >= 1, n <= 365 * 86_400 else {
                throw ConfigError(
                    file: e.file, line: e.line,
                    reason: "\(e.key)= must be a whole number of seconds from 1 to 31536000, got '\(e.value)'")
            }
            return n
        }
        for e in ini.entries {
            guard knownSections.contains(e.section) else {
                throw ConfigError(file: e.file, line: e.line, reason: "unknown section [\(e.section)]")
            }
            place = (e.file, e.line)
            if e.section == "Pair" {
                try c.pair.set(e)
                continue
            }
            switch e.key {
            case "VendorKeys":
                guard e.value.hasPrefix("/") || e.value.isEmpty else {
                    throw ConfigError(file: e.file, line: e.line, reason: "VendorKeys= must be an absolute path")
                }
                c.vendorKeys = e.value.isEmpty ? nil : e.value
            case "AdminGroup":
                do { try Validate.identifier(e.value, "AdminGroup", max: 32) } catch {
                    throw ConfigError(
                        file: e.file, line: e.line, reason: "AdminGroup= is not a valid group name: '\(e.value)'")
                }
                c.adminGroup = e.value
            case "Listen":
                if !listenSet {
                    c.listen = []
                    listenSet = true
                }
                if e.value.isEmpty {
                    c.listen = []
                } else {
                    for word in e.value.split(separator: " ") {
                        guard ListenAddress(parsing: String(word)) != nil else {
                            throw ConfigError(
                                file: e.file, line: e.line,
                                reason: "Listen= address '\(word)' is not HOST:PORT, [IPV6]:PORT or PORT")
                        }
                        c.listen.append(String(word))
                    }
                }
            case "ClientTokenFile":
                guard e.value.hasPrefix("/") || e.value.isEmpty else {
                    throw ConfigError(file: e.file, line: e.line, reason: "ClientTokenFile= must be an absolute path")
                }
                c.clientTokenFile = e.value.isEmpty ? nil : e.value
            case "TLSCertificate", "TLSKey":
                guard e.value.hasPrefix("/") || e.value.isEmpty else {
                    throw ConfigError(file: e.file, line: e.line, reason: "\(e.key)= must be an absolute path")
                }
                if e.key == "TLSCertificate" {
                    c.tlsCertificate = e.value.isEmpty ? nil : e.value
                } else {
                    c.tlsKey = e.value.isEmpty ? nil : e.value
                }
            case "MaxConnections", "MaxConnectionsPerAddress":
                guard let n = Int(e.value), n >= 1, n <= 1_000_000 else {
                    throw ConfigError(
                        file: e.file, line: e.line,
                        reason: "\(e.key)= must be a whole number from 1 to 1000000, got '\(e.value)'")
                }
                if e.key == "MaxConnections" { c.connectionLimits.total = n } else { c.connectionLimits.perAddress = n }
            case "IdleTimeoutSec": c.connectionLimits.idleTimeoutSec = Double(try seconds(e))
            case "RequestTimeoutSec": c.requestTimeoutSec = try seconds(e)
            case "DefaultLeaseSec": c.defaultLeaseSec = try seconds(e)
            case "MaxLeaseSec": c.maxLeaseSec = try seconds(e)
            case "Policy":
                guard e.value.hasPrefix("/") else {
                    throw ConfigError(file: e.file, line: e.line, reason: "Policy= must be an absolute path")
                }
                c.policy = e.value
            case "HistoryDays":
                guard let n = UInt64(e.value), n >= 1, n <= 36_500 else {
                    throw ConfigError(
                        file: e.file, line: e.line,
                        reason: "HistoryDays= must be a whole number of days from 1 to 36500, got '\(e.value)'")
                }
                c.historyDays = n
            default:
                throw ConfigError(file: e.file, line: e.line, reason: "unknown key '\(e.key)' in [\(e.section)]")
            }
        }
        if c.connectionLimits.perAddress > c.connectionLimits.total {
            throw ConfigError(
                file: place.0, line: place.1,
                reason:
                    "MaxConnectionsPerAddress= must not exceed MaxConnections= (one address would lock out the rest)")
        }
        if (c.tlsCertificate == nil) != (c.tlsKey == nil) {
            throw ConfigError(file: place.0, line: place.1, reason: "TLSCertificate= and TLSKey= must be set together")
        }
        if c.pair.heartbeatUSec * 2 > c.pair.failoverTimeoutUSec {
            throw ConfigError(
                file: place.0, line: place.1, reason: "FailoverTimeoutSec= must be at least twice HeartbeatSec=")
        }
        if c.defaultLeaseSec > c.maxLeaseSec {
            throw ConfigError(
                file: place.0, line: place.1,
                reason: "DefaultLeaseSec= (\(c.defaultLeaseSec)) is larger than MaxLeaseSec= (\(c.maxLeaseSec))")
        }
        return c
    }

    public static func load(path: String, required: Bool) throws(ConfigError) -> DaemonConfig {
        try parse(IniFile.load(path: path, required: required))
    }
}

/// The `[Pair]` section.
public struct PairConfig: Sendable, Equatable {
    /// The pair key (`tandemctl pair keygen FILE`); without it the pair link stays closed.
    public var keyFile: String?
    /// UDP address of the pair link.
    public var listen = "0.0.0.0:7391"
    /// The witness's UDP address (`tandem-witness`).
    public var witness: String?
    public var heartbeatUSec = PairSettings.defaultHeartbeatUSec
    public var failoverTimeoutUSec = PairSettings.defaultFailoverTimeoutUSec
    /// Without a witness: `takeover` or `split` (see `PartitionMode`).
    public var partitionPolicy = "takeover"
    /// `split`: the primary's share of the free seats while cut off, in percent (the backup's is the rest).
    public var splitPrimaryPercent: UInt32 = 50
    /// Change-log entries kept in memory at least (compaction folds older ones into a snapshot).
    public var logKeepEntries = 10_000
    /// How far the serving node's log may run ahead of an absent standby before it is compacted
    /// anyway (the standby then needs Sync: pair-not-synced).
    public var logRetainEntries = 1_000_000
    /// How the pair handles a partition, from `Witness=`, `PartitionPolicy=` and `SplitPrimaryPercent=`.
    public var partitionMode: PartitionMode {
        if witness != nil { return .witness }
        return partitionPolicy == "split" ? .split(primaryPercent: splitPrimaryPercent) : .takeover
    }
    public static let defaultPort = 7391
    public static let witnessPort = 7392

    mutating func set(_ e: IniFile.Entry) throws(ConfigError) {
        func fail(_ why: String) -> ConfigError { ConfigError(file: e.file, line: e.line, reason: why) }
        func duration() throws(ConfigError) -> UInt64 {
            let v = e.value.hasSuffix("s") ? String(e.value.dropLast()) : e.value
            guard let d = Double(v), d >= 0.05, d <= 3600 else {
                throw fail("\(e.key)= must be a number of seconds from 0.05 to 3600, got '\(e.value)'")
            }
            return UInt64(d * 1e6)
        }
        switch e.key {
        case "KeyFile":
            guard e.value.hasPrefix("/") || e.value.isEmpty else { throw fail("KeyFile= must be an absolute path") }
            keyFile = e.value.isEmpty ? nil : e.value
        case "Listen":
            guard !e.value.isEmpty, !e.value.contains(" ") else { throw fail("Listen= in [Pair] takes one HOST:PORT") }
            listen = e.value
        case "Witness":
            guard !e.value.contains(" ") else { throw fail("Witness= takes one HOST[:PORT]") }
            witness = e.value.isEmpty ? nil : e.value
        case "HeartbeatSec": heartbeatUSec = try duration()
        case "FailoverTimeoutSec": failoverTimeoutUSec = try duration()
        case "LogKeepEntries", "LogRetainEntries":
            guard let n = Int(e.value), n >= 1, n <= 100_000_000 else {
                throw fail("\(e.key)= must be a whole number from 1 to 100000000, got '\(e.value)'")
            }
            if e.key == "LogKeepEntries" { logKeepEntries = n } else { logRetainEntries = n }
        case "PartitionPolicy":
            guard ["takeover", "split"].contains(e.value) else {
                throw fail("PartitionPolicy= is 'takeover' or 'split', got '\(e.value)'")
            }
            partitionPolicy = e.value
        case "SplitPrimaryPercent":
            guard let n = UInt32(e.value), n <= 100 else {
                throw fail("SplitPrimaryPercent= must be a whole number from 0 to 100, got '\(e.value)'")
            }
            splitPrimaryPercent = n
        default:
            throw fail("unknown key '\(e.key)' in [Pair]")
        }
    }
}
