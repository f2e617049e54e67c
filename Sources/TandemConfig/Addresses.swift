import Foundation

/// Parses `Listen=` values: `HOST:PORT`, `[IPV6]:PORT`, `:PORT` or `PORT` (all addresses).
public struct ListenAddress: Sendable, Equatable, CustomStringConvertible {
    public var host: String
    public var port: Int
    public static let defaultPort = 7390

    public init(host: String, port: Int) {
        self.host = host
        self.port = port
    }

    public init?(parsing raw: String) {
        let s = raw.trimmingCharacters(in: .whitespaces)
        var host = "0.0.0.0"
        var portText = s
        if s.hasPrefix("[") {
            guard let close = s.firstIndex(of: "]") else { return nil }
            host = String(s[s.index(after: s.startIndex)..<close])
            let rest = s[s.index(after: close)...]
            guard rest.hasPrefix(":") else { return nil }
            portText = String(rest.dropFirst())
        } else if let colon = s.lastIndex(of: ":") {
            let h = String(s[..<colon])
            if !h.isEmpty { host = h }
            portText = String(s[s.index(after: colon)...])
        }
        guard let port = Int(portText), (0...65535).contains(port), !host.isEmpty, !host.contains(" ") else {
            return nil
        }
        self.host = host
        self.port = port
    }

    public var description: String { host.contains(":") ? "[\(host)]:\(port)" : "\(host):\(port)" }
}

/// What one client, and all of them, may hold of the network API (`MaxConnections=`,
/// `MaxConnectionsPerAddress=`, `IdleTimeoutSec=`).
public struct ConnectionLimits: Sendable, Equatable {
    /// Connections open at once, in all. Below tandemd's open-files limit, so that the bus,
    /// the pair link and the database always have descriptors.
    public var total: Int
    /// Connections open at once from one client address: below `total`, so that one machine
    /// cannot lock the others out.
    public var perAddress: Int
    /// A connection that sends no request for this long is closed (also one whose request's
    /// head does not arrive: a slow head is an idle connection).
    public var idleTimeoutSec: Double

    public init(total: Int = 4096, perAddress: Int = 1024, idleTimeoutSec: Double = 30) {
        self.total = total
        self.perAddress = perAddress
        self.idleTimeoutSec = idleTimeoutSec
    }
}
