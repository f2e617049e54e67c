/// A compact binary form of changes, for the pair link's messages and the store's change log:
/// every change is encoded on the critical path of an answer (and decoded on the standby's),
/// and JSON coding was a large share of both nodes' work per change. Integers are LEB128
/// varints, strings a varint length and UTF-8, optionals a 0/1 byte, enums a tag byte. Tags
/// are never reused (both a peer and an older log may hold any of them). Decoding never traps:
/// anything short or unknown is `WireError`.
public struct WireError: Error, Sendable, Equatable {
    public let what: String
    public init(what: String) { self.what = what }
}

public struct WireWriter {
    public private(set) var bytes: [UInt8] = []
    public init() { bytes.reserveCapacity(256) }

    public mutating func u64(_ v: UInt64) {
        var v = v
        while v >= 0x80 {
            bytes.append(UInt8(truncatingIfNeeded: v) | 0x80)
            v >>= 7
        }
        bytes.append(UInt8(v))
    }
    public mutating func u32(_ v: UInt32) { u64(UInt64(v)) }
    public mutating func int(_ v: Int) { u64(UInt64(bitPattern: Int64(v))) }
    public mutating func byte(_ v: UInt8) { bytes.append(v) }
    public mutating func bool(_ v: Bool) { bytes.append(v ? 1 : 0) }
    public mutating func string(_ s: String) {
        var s = s
        s.withUTF8 { u in
            u64(UInt64(u.count))
            bytes.append(contentsOf: u)
        }
    }
    public mutating func optional<T>(_ v: T?, _ write: (inout WireWriter, T) -> Void) {
        if let v {
            bytes.append(1)
            write(&self, v)
        } else {
            bytes.append(0)
        }
    }
    public mutating func array<T>(_ a: [T], _ write: (inout WireWriter, T) -> Void) {
        u64(UInt64(a.count))
        for x in a { write(&self, x) }
    }
}

public struct WireReader {
    let bytes: [UInt8]
    var at: Int
    public init(_ bytes: [UInt8], from: Int = 0) {
        self.bytes = bytes
        at = from
    }
    public var atEnd: Bool { at == bytes.count }

    public mutating func u64() throws(WireError) -> UInt64 {
        var v: UInt64 = 0
        var shift: UInt64 = 0
        while true {
            guard at < bytes.count, shift < 64 else { throw WireError(what: "truncated or oversized integer") }
            let b = bytes[at]
            at += 1
            v |= UInt64(b & 0x7F) << shift
            if b < 0x80 { return v }
            shift += 7
        }
    }
    public mutating func u32() throws(WireError) -> UInt32 {
        let v = try u64()
        guard v <= UInt64(UInt32.max) else { throw WireError(what: "32-bit value out of range") }
        return UInt32(v)
    }
    public mutating func int() throws(WireError) -> Int {
        let v = Int64(bitPattern: try u64())
        guard let i = Int(exactly: v) else { throw WireError(what: "integer out of range") }
        return i
    }
    public mutating func byte() throws(WireError) -> UInt8 {
        guard at < bytes.count else { throw WireError(what: "truncated") }
        at += 1
        return bytes[at - 1]
    }
    public mutating func bool() throws(WireError) -> Bool {
        switch try byte() {
        case 0: return false
        case 1: return true
        default: throw WireError(what: "bad boolean")
        }
    }
    public mutating func string() throws(WireError) -> String {
        let n = try u64()
        guard n <= UInt64(bytes.count - at) else { throw WireError(what: "truncated string") }
        let s = String(decoding: bytes[at..<(at + Int(n))], as: UTF8.self)
        at += Int(n)
        return s
    }
    public mutating func optional<T>(_ read: (inout WireReader) throws(WireError) -> T) throws(WireError) -> T? {
        try bool() ? try read(&self) : nil
    }
    public mutating func array<T>(_ read: (inout WireReader) throws(WireError) -> T) throws(WireError) -> [T] {
        let n = try u64()
        // Every element takes at least one byte: a count beyond what is left is a lie.
        guard n <= UInt64(bytes.count - at) else { throw WireError(what: "truncated array") }
        var out: [T] = []
        out.reserveCapacity(Int(n))
        for _ in 0..<n { out.append(try read(&self)) }
        return out
    }
}

extension Change {
    public func write(to w: inout WireWriter) {
        switch self {
        case .serverIdSet(let id):
            w.byte(1); w.string(id)
        case .licenseActivated(let l):
            w.byte(2); w.string(l.id); w.string(l.product); w.string(l.feature); w.u32(l.seats); w.u64(l.notAfterUSec)
            w.array(l.issuedTo) { $0.string($1) }; w.string(l.keyId); w.string(l.document); w.u64(l.activatedUSec)
        case .licenseDeactivated(let id):
            w.byte(3); w.string(id)
        case .leaseGranted(let l):
            // Tag 12 is tag 4 with the token's name after it: a lease taken without a named
            // token is written as before, so a peer that predates token names still reads it.
            // Tag 14 adds the holder's user and host names (optional each) and an optional token.
            // Tag 17 (a borrow) is tag 14 with the machine id and the revocation time after it.
            let named = l.user != nil || l.host != nil || l.isBorrowed
            w.byte(l.isBorrowed ? 17 : named ? 14 : l.token == nil ? 4 : 12)
            w.string(l.id); w.string(l.feature); w.string(l.client)
            w.u32(l.count); w.optional(l.uid) { $0.u32($1) }; w.optional(l.requestId) { $0.string($1) }
            w.u64(l.acquiredUSec); w.u64(l.expiresUSec); w.u64(l.ttlUSec); w.u64(l.epoch)
            if named {
                w.optional(l.token) { $0.string($1) }; w.optional(l.user) { $0.string($1) }
                w.optional(l.host) { $0.string($1) }
                if let machine = l.machineId {
                    w.string(machine); w.optional(l.borrowRevokedUSec) { $0.u64($1) }
                }
            } else if let token = l.token {
                w.string(token)
            }
        case .leaseRenewed(let id, let expires):
            w.byte(5); w.string(id); w.u64(expires)
        case .leaseReleased(let id, let at, let revoked):
            // Tag 15 is tag 6 with when and by whom (a release logged before the history is tag 6).
            if let at {
                w.byte(15); w.string(id); w.u64(at); w.bool(revoked ?? false)
            } else {
                w.byte(6); w.string(id)
            }
        case .leaseExpired(let id):
            w.byte(7); w.string(id)
        case .borrowRevoked(let id, let at):
            w.byte(18); w.string(id); w.u64(at)
        case .reservationAdded(let r):
            w.byte(8); w.string(r.id); w.string(r.feature); w.string(r.holder); w.u32(r.count)
        case .reservationRemoved(let id):
            w.byte(9); w.string(id)
        case .epochStarted(let e):
            w.byte(10); w.u64(e)
        case .leasesMerged(let e, let through):
            w.byte(11); w.u64(e); w.u64(through)
        case .audited(let a):
            w.byte(13); w.string(a.id); w.u64(a.timeUSec); w.string(a.serverId); w.string(a.action)
            w.string(a.via.rawValue); w.optional(a.uid) { $0.u32($1) }; w.optional(a.user) { $0.string($1) }
            w.optional(a.token) { $0.string($1) }
            w.array(a.arguments.sorted { $0.key < $1.key }) {
                $0.string($1.key); $0.string($1.value)
            }
            w.string(a.result); w.string(a.detail)
        case .acquisitionDenied(let d):
            w.byte(16); w.string(d.id); w.u64(d.timeUSec); w.string(d.feature); w.u32(d.count); w.string(d.client)
            w.optional(d.holder.user) { $0.string($1) }; w.optional(d.holder.host) { $0.string($1) }
            w.optional(d.uid) { $0.u32($1) }; w.optional(d.token) { $0.string($1) }; w.string(d.reason.rawValue)
        }
    }

    public static func read(from r: inout WireReader) throws(WireError) -> Change {
        switch try r.byte() {
        case 1: return .serverIdSet(id: try r.string())
        case 2:
            return .licenseActivated(
                License(
                    id: try r.string(), product: try r.string(), feature: try r.string(), seats: try r.u32(),
                    notAfterUSec: try r.u64(),
                    issuedTo: try r.array { (r: inout WireReader) throws(WireError) in try r.string() },
                    keyId: try r.string(),
                    document: try r.string(), activatedUSec: try r.u64()))
        case 3: return .licenseDeactivated(id: try r.string())
        case let tag where tag == 4 || tag == 12 || tag == 14 || tag == 17:
            var lease = Lease(
                id: try r.string(), feature: try r.string(), client: try r.string(), count: try r.u32(),
                uid: try r.optional { (r: inout WireReader) throws(WireError) in try r.u32() },
                requestId: try r.optional { (r: inout WireReader) throws(WireError) in try r.string() },
                acquiredUSec: try r.u64(), expiresUSec: try r.u64(), ttlUSec: try r.u64(), epoch: try r.u64())
            if tag == 12 { lease.token = try r.string() }
            if tag == 14 || tag == 17 {
                lease.token = try r.optional { (r: inout WireReader) throws(WireError) in try r.string() }
                lease.user = try r.optional { (r: inout WireReader) throws(WireError) in try r.string() }
                lease.host = try r.optional { (r: inout WireReader) throws(WireError) in try r.string() }
            }
            if tag == 17 {
                lease.machineId = try r.string()
                lease.borrowRevokedUSec = try r.optional { (r: inout WireReader) throws(WireError) in try r.u64() }
            }
            return .leaseGranted(lease)
        case 5: return .leaseRenewed(id: try r.string(), expiresUSec: try r.u64())
        case 6: return .leaseReleased(id: try r.string())
        case 7: return .leaseExpired(id: try r.string())
        case 18: return .borrowRevoked(id: try r.string(), atUSec: try r.u64())
        case 15: return .leaseReleased(id: try r.string(), atUSec: try r.u64(), revoked: try r.bool())
        case 16:
            let id = try r.string(), time = try r.u64(), feature = try r.string(), count = try r.u32()
            let client = try r.string()
            let user = try r.optional { (r: inout WireReader) throws(WireError) in try r.string() }
            let host = try r.optional { (r: inout WireReader) throws(WireError) in try r.string() }
            let uid = try r.optional { (r: inout WireReader) throws(WireError) in try r.u32() }
            let token = try r.optional { (r: inout WireReader) throws(WireError) in try r.string() }
            guard let reason = DenialReason(rawValue: try r.string()) else {
                throw WireError(what: "unknown denial reason")
            }
            return .acquisitionDenied(
                Denial(
                    id: id, timeUSec: time, feature: feature, count: count, client: client,
                    holder: Holder(user: user, host: host), uid: uid, token: token, reason: reason))
        case 8:
            return .reservationAdded(
                Reservation(id: try r.string(), feature: try r.string(), holder: try r.string(), count: try r.u32()))
        case 9: return .reservationRemoved(id: try r.string())
        case 10: return .epochStarted(epoch: try r.u64())
        case 11: return .leasesMerged(epoch: try r.u64(), through: try r.u64())
        case 13:
            let id = try r.string(), time = try r.u64(), serverId = try r.string(), action = try r.string()
            let channel = try r.string()
            guard let via = AuditChannel(rawValue: channel) else { throw WireError(what: "unknown audit channel") }
            let uid = try r.optional { (r: inout WireReader) throws(WireError) in try r.u32() }
            let user = try r.optional { (r: inout WireReader) throws(WireError) in try r.string() }
            let token = try r.optional { (r: inout WireReader) throws(WireError) in try r.string() }
            let pairs = try r.array { (r: inout WireReader) throws(WireError) in (try r.string(), try r.string()) }
            var arguments: [String: String] = [:]
            for (k, v) in pairs {
                guard arguments.updateValue(v, forKey: k) == nil else {
                    throw WireError(what: "repeated audit argument")
                }
            }
            return .audited(
                AuditRecord(
                    id: id, timeUSec: time, serverId: serverId, action: action, via: via, uid: uid, user: user,
                    token: token, arguments: arguments, result: try r.string(), detail: try r.string()))
        case let t: throw WireError(what: "unknown change tag \(t)")
        }
    }
}

extension LogEntry {
    public func write(to w: inout WireWriter) {
        w.u64(seq); w.u64(epoch); change.write(to: &w)
    }
    public static func read(from r: inout WireReader) throws(WireError) -> LogEntry {
        LogEntry(seq: try r.u64(), epoch: try r.u64(), change: try Change.read(from: &r))
    }
}
