import Crypto
import Foundation
import TandemCore

/// What a borrowing machine keeps while it is away from the license servers: the pair's
/// signed statement that seats of a feature are this machine's until a time.
///
///     Tandem-Borrow: 1
///     Lease: 0f3c9a...
///     Feature: cad
///     Seats: 1
///     Machine-Id: 3d1219c7c4c5404aaa1f6d2a48adfda4
///     User: alice
///     Host: laptop7
///     Issued-At: 2026-12-07T09:00:00Z
///     Not-After: 2026-12-14T09:00:00Z
///     Key-Id: 3b1f0c9e2d4a5b6c
///     Signature: <base64 Ed25519 signature>
///
/// The signature covers every line before `Signature:`, each ending in "\n" (as a license's).
/// `Not-After` is in whole seconds, never after the lease's own expiry on the servers.
public struct BorrowCertificate: Sendable, Equatable {
    public var leaseId: String
    public var feature: String
    public var seats: UInt32
    public var machineId: String
    public var user: String?
    public var host: String?
    public var issuedUSec: USec
    public var notAfterUSec: USec
    public var keyId: String
    public var signature: Data

    public static let formatVersion = "1"

    /// The certificate of a borrowed lease (unsigned: `BorrowSigner.sign`).
    public init(_ lease: Lease) {
        leaseId = lease.id
        feature = lease.feature
        seats = lease.count
        machineId = lease.machineId ?? ""
        (user, host) = (lease.user, lease.host)
        issuedUSec = lease.acquiredUSec / usecPerSecond * usecPerSecond
        notAfterUSec = lease.expiresUSec / usecPerSecond * usecPerSecond
        keyId = ""
        signature = Data()
    }

    public var payload: String {
        var lines = [
            "Tandem-Borrow: \(Self.formatVersion)", "Lease: \(leaseId)", "Feature: \(feature)", "Seats: \(seats)",
            "Machine-Id: \(machineId)"
        ]
        if let user { lines.append("User: \(user)") }
        if let host { lines.append("Host: \(host)") }
        lines += [
            "Issued-At: \(CivilDate.formatInstant(usec: issuedUSec))",
            "Not-After: \(CivilDate.formatInstant(usec: notAfterUSec))", "Key-Id: \(keyId)"
        ]
        return lines.map { $0 + "\n" }.joined()
    }

    public var text: String { payload + "Signature: \(signature.base64EncodedString())\n" }

    /// Reads a certificate in exactly the form `text` writes (CRLF line ends forgiven).
    public init(text: String) throws(BorrowCheckError) {
        let lines = text.replacingOccurrences(of: "\r\n", with: "\n").split(separator: "\n").map(String.init)
        var fields: [(String, String)] = []
        for line in lines {
            guard let colon = line.range(of: ": ") else { throw .malformed("'\(line.prefix(40))' is not 'Key: value'") }
            fields.append((String(line[..<colon.lowerBound]), String(line[colon.upperBound...])))
        }
        var i = 0
        func take(_ key: String, optional: Bool = false) throws(BorrowCheckError) -> String? {
            guard i < fields.count, fields[i].0 == key else {
                if optional { return nil }
                throw .malformed("expected '\(key):' at line \(i + 1)")
            }
            i += 1
            return fields[i - 1].1
        }
        guard try take("Tandem-Borrow") == Self.formatVersion else { throw .malformed("not a version 1 certificate") }
        leaseId = try take("Lease")!
        feature = try take("Feature")!
        guard let n = UInt32(try take("Seats")!) else { throw .malformed("Seats is not a number") }
        seats = n
        machineId = try take("Machine-Id")!
        user = try take("User", optional: true)
        host = try take("Host", optional: true)
        guard let issued = CivilDate.parseInstant(try take("Issued-At")!),
            let notAfter = CivilDate.parseInstant(try take("Not-After")!)
        else { throw .malformed("a time is not YYYY-MM-DDTHH:MM:SSZ") }
        (issuedUSec, notAfterUSec) = (issued, notAfter)
        keyId = try take("Key-Id")!
        guard let sig = Data(base64Encoded: try take("Signature")!), sig.count == 64 else {
            throw .malformed("the signature is not 64 bytes of base64")
        }
        signature = sig
        guard i == fields.count else { throw .malformed("text after the signature") }
    }

    /// Checks the certificate on the machine whose id is `machineId`, at `now`, against the
    /// pair's public key: signed by it, for this machine, not yet expired, and not before it was
    /// issued (a clock set back by more than `clockSlackUSec`). Offline: no server is asked, so
    /// a revocation does not reach it (the seats stay counted until `Not-After` for that reason).
    public func verify(key: PublicSigningKey, machineId: String, now: USec) throws(BorrowCheckError) {
        guard keyId == key.keyId else {
            throw .wrongKey("signed by key \(keyId), not by the configured borrow key \(key.keyId)")
        }
        guard key.key.isValidSignature(signature, for: Data(payload.utf8)) else {
            throw .badSignature("the signature does not match: the certificate was altered")
        }
        guard self.machineId == machineId else {
            throw .otherMachine("borrowed for machine \(self.machineId), and this is \(machineId)")
        }
        guard now < notAfterUSec else {
            throw .expired("the borrow ended at \(CivilDate.formatInstant(usec: notAfterUSec))")
        }
        guard now + Self.clockSlackUSec >= issuedUSec else {
            throw .expired(
                "this machine's clock is before the borrow was issued (\(CivilDate.formatInstant(usec: issuedUSec)))")
        }
    }

    /// How far this machine's clock may be behind the server's that issued the certificate.
    public static let clockSlackUSec: USec = 3_600 * usecPerSecond
}

/// Why a borrow certificate does not hold here.
public enum BorrowCheckError: Error, Equatable, CustomStringConvertible {
    case malformed(String)
    case wrongKey(String)
    case badSignature(String)
    case otherMachine(String)
    case expired(String)

    public var description: String {
        switch self {
        case .malformed(let s): return "not a borrow certificate: \(s)"
        case .wrongKey(let s), .badSignature(let s), .otherMachine(let s), .expired(let s): return s
        }
    }
}

/// The pair's borrow signing key. Both nodes of a pair derive the same key from the pair key
/// (`init(pairSecret:)`), so a certificate signed by either verifies against one public key,
/// before and after a failover, and the key never travels: not in the change log, not on the
/// link. A standalone server keeps its own in a file (`PrivateSigningKey`).
public struct BorrowSigner: Sendable {
    let privateKey: PrivateSigningKey

    public init(_ key: PrivateSigningKey) { privateKey = key }

    /// The key derived from the pair's 32-byte shared secret (HKDF-SHA256, a label of its own,
    /// so that nothing else derived from the pair key can stand in for it).
    public init(pairSecret: [UInt8]) {
        let seed = HKDF<SHA256>.deriveKey(
            inputKeyMaterial: SymmetricKey(data: pairSecret), salt: Data("tandem".utf8),
            info: Data("tandem borrow signing key v1".utf8), outputByteCount: 32)
        privateKey = try! PrivateSigningKey(rawRepresentation: seed.withUnsafeBytes { Data($0) })
    }

    public var publicKey: PublicSigningKey { privateKey.publicKey }

    /// The signed certificate of `lease` (a borrow).
    public func certificate(for lease: Lease) -> BorrowCertificate {
        var c = BorrowCertificate(lease)
        c.keyId = publicKey.keyId
        c.signature = try! privateKey.key.signature(for: Data(c.payload.utf8))
        return c
    }
}
