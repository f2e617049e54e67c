import Foundation

/// `/etc/tandem/client.conf`: systemd-style INI with a `[Client]` section.
///
///     [Client]
///     Server=license1.example:7390
///     Backup=license2.example:7390
///     TokenFile=/etc/tandem/client.token
///     BorrowKey=ed25519 MCowBQYDK2VwAyEA...
///
/// `BorrowKey=` is the pair's public key for borrow certificates, as the server reports it
/// (`tandemctl client configure` writes it); `BorrowDirectory=` where they are kept (default
/// `$XDG_STATE_HOME/tandem/borrowed`).
///
/// A server given as `https://HOST:PORT` is reached over TLS and verified against the
/// system's certificate authorities (a private CA goes in with update-ca-certificates).
public struct ClientConfiguration: Sendable, Equatable {
    public var server: String?
    public var backup: String?
    public var tokenFile: String?
    public var borrowKey: String?
    public var borrowDirectory: String?

    public init(server: String? = nil, backup: String? = nil, tokenFile: String? = nil) {
        self.server = server
        self.backup = backup
        self.tokenFile = tokenFile
    }

    public static let defaultPath = "/etc/tandem/client.conf"

    /// `--config`, else `$TANDEM_CLIENT_CONFIG`, else the default path.
    public static func path(override: String?) -> String {
        override ?? ProcessInfo.processInfo.environment["TANDEM_CLIENT_CONFIG"].flatMap { $0.isEmpty ? nil : $0 }
            ?? defaultPath
    }

    public var servers: [String] { [server, backup].compactMap { $0 } }

    public struct ParseError: Error, CustomStringConvertible {
        public let description: String
    }

    public static func parse(_ text: String, file: String) throws(ParseError) -> ClientConfiguration {
        var c = ClientConfiguration()
        var section: String?
        for (i, raw) in text.split(separator: "\n", omittingEmptySubsequences: false).enumerated() {
            let line = raw.trimmingCharacters(in: .whitespaces)
            if line.isEmpty || line.hasPrefix("#") || line.hasPrefix(";") { continue }
            if line.hasPrefix("[") && line.hasSuffix("]") {
                section = String(line.dropFirst().dropLast())
                guard section == "Client" else {
                    throw ParseError(description: "\(file):\(i + 1): unknown section [\(section!)]")
                }
                continue
            }
            guard section == "Client", let eq = line.firstIndex(of: "=") else {
                throw ParseError(description: "\(file):\(i + 1): expected 'Key=Value' in [Client]")
            }
            let key = line[..<eq].trimmingCharacters(in: .whitespaces)
            let value = line[line.index(after: eq)...].trimmingCharacters(in: .whitespaces)
            switch key {
            case "Server": c.server = value.isEmpty ? nil : value
            case "Backup": c.backup = value.isEmpty ? nil : value
            case "TokenFile": c.tokenFile = value.isEmpty ? nil : value
            case "BorrowKey": c.borrowKey = value.isEmpty ? nil : value
            case "BorrowDirectory":
                guard value.isEmpty || value.hasPrefix("/") else {
                    throw ParseError(description: "\(file):\(i + 1): BorrowDirectory= must be an absolute path")
                }
                c.borrowDirectory = value.isEmpty ? nil : value
            default: throw ParseError(description: "\(file):\(i + 1): unknown key '\(key)'")
            }
        }
        return c
    }

    public static func load(path: String) throws(ParseError) -> ClientConfiguration {
        guard let text = try? String(contentsOfFile: path, encoding: .utf8) else {
            throw ParseError(description: "\(path): cannot read (run 'tandemctl client configure' first)")
        }
        return try parse(text, file: path)
    }

    public var text: String {
        var lines = ["# Written by tandemctl client configure.", "[Client]"]
        if let server { lines.append("Server=\(server)") }
        if let backup { lines.append("Backup=\(backup)") }
        if let tokenFile { lines.append("TokenFile=\(tokenFile)") }
        if let borrowKey { lines.append("BorrowKey=\(borrowKey)") }
        if let borrowDirectory { lines.append("BorrowDirectory=\(borrowDirectory)") }
        return lines.joined(separator: "\n") + "\n"
    }

    /// The bearer token from `TokenFile=` (first non-comment line).
    public func token() throws(ParseError) -> String? {
        guard let tokenFile else { return nil }
        guard let text = try? String(contentsOfFile: tokenFile, encoding: .utf8),
            let t = text.split(separator: "\n").map({ $0.trimmingCharacters(in: .whitespaces) }).first(where: {
                !$0.isEmpty && !$0.hasPrefix("#")
            })
        else {
            throw ParseError(description: "\(tokenFile): cannot read a token")
        }
        return t
    }
}
