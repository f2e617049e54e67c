import Crypto
import Foundation
import TandemCore

/// An Ed25519 public key as kept in `*.pub` files, `ed25519 <base64> [comment]`: a vendor's
/// (which licenses it signed), or a pair's borrow key (`BorrowKey=` of client.conf).
public struct PublicSigningKey: Sendable {
    public let rawRepresentation: Data
    public let comment: String

    public init(rawRepresentation: Data, comment: String = "") throws {
        _ = try Curve25519.Signing.PublicKey(rawRepresentation: rawRepresentation)
        self.rawRepresentation = rawRepresentation
        self.comment = comment
    }

    public var key: Curve25519.Signing.PublicKey {
        try! Curve25519.Signing.PublicKey(rawRepresentation: rawRepresentation)
    }

    /// First 16 hex digits of SHA-256 over the raw key.
    public var keyId: String { Self.keyId(of: key.rawRepresentation) }

    static func keyId(of raw: Data) -> String {
        SHA256.hash(data: raw).prefix(8).map { String(format: "%02x", $0) }.joined()
    }

    public var fileText: String { text + "\n" }

    /// `ed25519 <base64> [comment]` on one line.
    public var text: String {
        "ed25519 \(key.rawRepresentation.base64EncodedString())\(comment.isEmpty ? "" : " " + comment)"
    }

    public static func parse(_ text: String) throws -> PublicSigningKey {
        let line =
            text.split(separator: "\n").map { $0.trimmingCharacters(in: .whitespaces) }
            .first { !$0.isEmpty && !$0.hasPrefix("#") } ?? ""
        let parts = line.split(separator: " ", maxSplits: 2).map(String.init)
        guard parts.count >= 2, parts[0] == "ed25519", let raw = Data(base64Encoded: parts[1]), raw.count == 32 else {
            throw KeyFileError("not an 'ed25519 <base64>' public key")
        }
        return try PublicSigningKey(rawRepresentation: raw, comment: parts.count > 2 ? parts[2] : "")
    }
}

public struct KeyFileError: Error, CustomStringConvertible {
    public let description: String
    public init(_ d: String) { description = d }
}

/// An Ed25519 signing key, kept in a 0600 file as `ed25519-private <base64>`: a vendor's, or a
/// standalone server's borrow key.
public struct PrivateSigningKey: Sendable {
    let raw: Data

    public init() { raw = Curve25519.Signing.PrivateKey().rawRepresentation }
    public init(rawRepresentation: Data) throws {
        raw = try Curve25519.Signing.PrivateKey(rawRepresentation: rawRepresentation).rawRepresentation
    }

    public var key: Curve25519.Signing.PrivateKey { try! Curve25519.Signing.PrivateKey(rawRepresentation: raw) }

    public var publicKey: PublicSigningKey { try! PublicSigningKey(rawRepresentation: key.publicKey.rawRepresentation) }

    public var fileText: String { "ed25519-private \(key.rawRepresentation.base64EncodedString())\n" }

    public static func parse(_ text: String) throws -> PrivateSigningKey {
        let parts = text.trimmingCharacters(in: .whitespacesAndNewlines).split(separator: " ").map(String.init)
        guard parts.count == 2, parts[0] == "ed25519-private", let raw = Data(base64Encoded: parts[1]), raw.count == 32
        else {
            throw KeyFileError("not an 'ed25519-private <base64>' key file")
        }
        return try PrivateSigningKey(rawRepresentation: raw)
    }

    /// Signs `doc` (its key id is set to this key's).
    public func sign(_ doc: LicenseDocument) throws -> LicenseDocument {
        var d = doc
        d.keyId = publicKey.keyId
        d.signature = try key.signature(for: Data(d.payload.utf8))
        return d
    }
}

/// The set of vendor keys a server trusts.
public struct TrustedKeys: Sendable {
    public private(set) var keys: [String: PublicSigningKey] = [:]
    public init(_ list: [PublicSigningKey] = []) {
        for k in list { keys[k.keyId] = k }
    }

    /// Loads `path`: a `.pub` file, or a directory whose `*.pub` files are read.
    public static func load(path: String) throws -> TrustedKeys {
        var isDir: ObjCBool = false
        guard FileManager.default.fileExists(atPath: path, isDirectory: &isDir) else {
            throw KeyFileError("\(path): no such file or directory")
        }
        var files: [String] = [path]
        if isDir.boolValue {
            files = try FileManager.default.contentsOfDirectory(atPath: path).filter { $0.hasSuffix(".pub") }.sorted()
                .map { (path as NSString).appendingPathComponent($0) }
        }
        var list: [PublicSigningKey] = []
        for f in files {
            guard let text = try? String(contentsOfFile: f, encoding: .utf8) else {
                throw KeyFileError("\(f): cannot read")
            }
            do { list.append(try PublicSigningKey.parse(text)) } catch { throw KeyFileError("\(f): \(error)") }
        }
        return TrustedKeys(list)
    }

    /// Parses and verifies a license document against these keys.
    public func verify(_ text: String) throws(TandemError) -> LicenseDocument {
        let doc = try LicenseDocument.parse(text)
        guard let key = keys[doc.keyId] else {
            throw TandemError(
                .invalidLicense,
                "license \(quoted(doc.id)) is signed by key \(quoted(doc.keyId)), which this server does not trust")
        }
        guard key.key.isValidSignature(doc.signature, for: Data(doc.payload.utf8)) else {
            throw TandemError(.invalidLicense, "license \(quoted(doc.id)): signature does not match its contents")
        }
        return doc
    }
}
