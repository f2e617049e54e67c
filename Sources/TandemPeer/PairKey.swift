import Crypto
import Foundation

public struct PairKeyError: Error, CustomStringConvertible, Equatable {
    public let description: String
    public init(_ d: String) { description = d }
}

/// The pair's shared secret: 32 random bytes that authenticate every frame on the pair link
/// (HMAC-SHA256). Both nodes and the witness read the same file (`KeyFile=` in `[Pair]`).
/// The file holds one line, `tandem-pair-key-v1 <base64>`, and must be private to the service
/// (`SecretFile`).
public struct PairKey: Sendable {
    public static let header = "tandem-pair-key-v1"
    let bytes: [UInt8]
    /// An HMAC already keyed with the secret, copied for each frame: keying one (a key object,
    /// two hashed pads) per frame was ~1.6 % of a paired node's CPU.
    private let keyed: KeyedHMAC

    public init(bytes: [UInt8]) throws(PairKeyError) {
        guard bytes.count == 32 else { throw PairKeyError("a pair key has 32 bytes, not \(bytes.count)") }
        self.bytes = bytes
        keyed = KeyedHMAC(hmac: HMAC<SHA256>(key: SymmetricKey(data: bytes)))
    }

    /// The secret itself, for keys derived from it (the pair's borrow signing key).
    public var secret: [UInt8] { bytes }

    public static func generate() -> PairKey {
        // swift-crypto's SymmetricKey uses the system's secure random generator.
        let k = SymmetricKey(size: .bits256)
        return try! PairKey(bytes: k.withUnsafeBytes { Array($0) })
    }

    public var fileText: String {
        Self.header + " " + Data(bytes).base64EncodedString() + "\n"
    }

    public init(text: String) throws(PairKeyError) {
        let parts = text.split(whereSeparator: { $0 == " " || $0 == "\n" || $0 == "\t" })
        guard parts.count == 2, parts[0] == Self.header, let data = Data(base64Encoded: String(parts[1])) else {
            throw PairKeyError(
                "not a pair key (expected '\(Self.header) <base64>'; make one with 'tandemctl pair keygen FILE')")
        }
        try self.init(bytes: Array(data))
    }

    /// Reads a key file. The programs that use the key check first that it is private
    /// (`SecretFile.check` in TandemSystemd): its owner, group and mode are theirs to judge.
    public static func load(path: String) throws(PairKeyError) -> PairKey {
        guard let data = FileManager.default.contents(atPath: path) else { throw PairKeyError("\(path): cannot read") }
        do { return try PairKey(text: String(decoding: data, as: UTF8.self)) } catch {
            throw PairKeyError("\(path): \(error.description)")
        }
    }

    /// Writes a new key file with mode 0600; refuses to overwrite an existing file.
    public func write(path: String) throws(PairKeyError) {
        let fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0o600)
        guard fd >= 0 else { throw PairKeyError("\(path): \(String(cString: strerror(errno)))") }
        defer { close(fd) }
        let bytes = Array(fileText.utf8)
        guard Foundation.write(fd, bytes, bytes.count) == bytes.count, fsync(fd) == 0 else {
            throw PairKeyError("\(path): \(String(cString: strerror(errno)))")
        }
    }

    func tag(_ data: some DataProtocol) -> [UInt8] {
        Array(code(data))
    }

    func isValid(tag: some DataProtocol, for data: some DataProtocol) -> Bool {
        // The code's == with bytes compares in constant time.
        code(data) == tag
    }

    private func code(_ data: some DataProtocol) -> HashedAuthenticationCode<SHA256> {
        var h = keyed.hmac
        h.update(data: data)
        return h.finalize()
    }
}

/// A keyed HMAC, shared read-only: it is a value, and each use updates a copy of its own.
private struct KeyedHMAC: @unchecked Sendable {
    let hmac: HMAC<SHA256>
}
