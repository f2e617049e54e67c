import Crypto
import Foundation
import TandemCore

/// A bearer token the network API accepts, and the name leases taken with it are recorded under.
public struct ClientToken: Sendable, Equatable {
    public var name: String
    let secret: [UInt8]

    public init(name: String, secret: String) {
        self.name = name
        self.secret = Array(secret.utf8)
    }

    /// An unnamed token's name: a fingerprint, stable across edits of the file and useless for
    /// guessing the token (the first 12 hex digits of its SHA-256).
    public static func fingerprint(_ secret: String) -> String {
        "sha256:" + SHA256.hash(data: Data(secret.utf8)).prefix(6).map { String(format: "%02x", $0) }.joined()
    }

    /// Reads a `ClientTokenFile=`: one token per line, `NAME TOKEN` or a bare `TOKEN`, blank
    /// lines and `#` comments ignored. Names are identifiers (letters, digits, `.`, `_`, `-`,
    /// `:`; at most 64 bytes) and unique.
    public static func read(path: String) throws(TokenFileError) -> [ClientToken] {
        let text: String
        do { text = try String(contentsOfFile: path, encoding: .utf8) } catch {
            throw TokenFileError(path: path, line: nil, reason: "cannot read it (\(error.localizedDescription))")
        }
        var tokens: [ClientToken] = []
        for (index, raw) in text.split(separator: "\n", omittingEmptySubsequences: false).enumerated() {
            let line = raw.trimmingCharacters(in: .whitespaces)
            if line.isEmpty || line.hasPrefix("#") { continue }
            let fields = line.split(whereSeparator: { $0 == " " || $0 == "\t" }).map(String.init)
            let token: ClientToken
            switch fields.count {
            case 1: token = ClientToken(name: fingerprint(fields[0]), secret: fields[0])
            case 2:
                do { try Validate.identifier(fields[0], "token name", max: 64) } catch {
                    throw TokenFileError(path: path, line: index + 1, reason: error.message)
                }
                token = ClientToken(name: fields[0], secret: fields[1])
            default:
                throw TokenFileError(
                    path: path, line: index + 1,
                    reason: "expected 'NAME TOKEN' or 'TOKEN', found \(fields.count) fields")
            }
            guard !tokens.contains(where: { $0.name == token.name }) else {
                throw TokenFileError(path: path, line: index + 1, reason: "the name '\(token.name)' is used twice")
            }
            tokens.append(token)
        }
        guard !tokens.isEmpty else { throw TokenFileError(path: path, line: nil, reason: "it holds no token") }
        return tokens
    }

    /// The token `presented` is, compared in constant time against every one (nil: none).
    static func match(_ presented: [UInt8], in tokens: [ClientToken]) -> ClientToken? {
        var found: ClientToken?
        for t in tokens {
            var diff = UInt8(t.secret.count == presented.count ? 0 : 1)
            for i in 0..<t.secret.count { diff |= t.secret[i] ^ (i < presented.count ? presented[i] : 0) }
            if diff == 0 { found = t }
        }
        return found
    }
}

/// Why a token file was not taken, with its path and line.
public struct TokenFileError: Error, CustomStringConvertible {
    public var path: String
    public var line: Int?
    public var reason: String
    public var description: String { "\(path)\(line.map { ":\($0)" } ?? ""): \(reason)" }
}

/// The tokens in force, replaced as a whole on reload.
final class TokenStore: @unchecked Sendable {
    private let lock = NSLock()
    private var _tokens: [ClientToken]
    init(_ tokens: [ClientToken]) { _tokens = tokens }
    var tokens: [ClientToken] { lock.withLock { _tokens } }
    func set(_ tokens: [ClientToken]) { lock.withLock { _tokens = tokens } }
}
