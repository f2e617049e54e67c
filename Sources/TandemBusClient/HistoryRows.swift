/// The rows of the usage history's methods (see docs/dbus-api.md). Text that is not known
/// (a holder's user or host, a token) is the empty string, a missing uid `AuditRow.noUid`.

/// ListLeaseHolders: one active lease with who holds it.
public struct LeaseHolderRow: BusRow {
    public static let signature = "(sssuttsssu)"
    public var id, feature, client: String
    public var count: UInt32
    public var acquiredUSec, expiresUSec: UInt64
    public var user, host, token: String
    public var uid: UInt32

    public init(
        id: String, feature: String, client: String, count: UInt32, acquiredUSec: UInt64, expiresUSec: UInt64,
        user: String, host: String, token: String, uid: UInt32
    ) {
        (self.id, self.feature, self.client, self.count) = (id, feature, client, count)
        (self.acquiredUSec, self.expiresUSec) = (acquiredUSec, expiresUSec)
        (self.user, self.host, self.token, self.uid) = (user, host, token, uid)
    }

    public init?(_ value: BusValue) {
        guard let f = value.structValue, f.count == 10, case .uint32(let count) = f[3],
            case .uint64(let acquired) = f[4], case .uint64(let expires) = f[5], case .uint32(let uid) = f[9]
        else { return nil }
        let s = [0, 1, 2, 6, 7, 8].compactMap { f[$0].stringValue }
        guard s.count == 6 else { return nil }
        self.init(
            id: s[0], feature: s[1], client: s[2], count: count, acquiredUSec: acquired, expiresUSec: expires,
            user: s[3], host: s[4], token: s[5], uid: uid)
    }

    public var busValue: BusValue {
        .structure([
            .string(id), .string(feature), .string(client), .uint32(count), .uint64(acquiredUSec),
            .uint64(expiresUSec), .string(user), .string(host), .string(token), .uint32(uid)
        ])
    }
}

/// ListSessions: one lease's life; `endUSec` 0 and `ended` "" while it is held.
public struct SessionRow: BusRow {
    public static let signature = "(sssusssutts)"
    public var leaseId, feature, client: String
    public var count: UInt32
    public var user, host, token: String
    public var uid: UInt32
    public var startUSec, endUSec: UInt64
    /// "released", "expired", "revoked", "merged", or "" while held.
    public var ended: String

    public init(
        leaseId: String, feature: String, client: String, count: UInt32, user: String, host: String,
        token: String, uid: UInt32, startUSec: UInt64, endUSec: UInt64, ended: String
    ) {
        (self.leaseId, self.feature, self.client, self.count) = (leaseId, feature, client, count)
        (self.user, self.host, self.token, self.uid) = (user, host, token, uid)
        (self.startUSec, self.endUSec, self.ended) = (startUSec, endUSec, ended)
    }

    public init?(_ value: BusValue) {
        guard let f = value.structValue, f.count == 11, case .uint32(let count) = f[3], case .uint32(let uid) = f[7],
            case .uint64(let start) = f[8], case .uint64(let end) = f[9]
        else { return nil }
        let s = [0, 1, 2, 4, 5, 6, 10].compactMap { f[$0].stringValue }
        guard s.count == 7 else { return nil }
        self.init(
            leaseId: s[0], feature: s[1], client: s[2], count: count, user: s[3], host: s[4], token: s[5], uid: uid,
            startUSec: start, endUSec: end, ended: s[6])
    }

    public var busValue: BusValue {
        .structure([
            .string(leaseId), .string(feature), .string(client), .uint32(count), .string(user), .string(host),
            .string(token), .uint32(uid), .uint64(startUSec), .uint64(endUSec), .string(ended)
        ])
    }
}

/// ListDenials: one refused acquisition and why ("insufficient-seats", "reserved-for-others",
/// "unknown-feature").
public struct DenialRow: BusRow {
    public static let signature = "(stsussssus)"
    public var id: String
    public var timeUSec: UInt64
    public var feature: String
    public var count: UInt32
    public var client, user, host, token: String
    public var uid: UInt32
    public var reason: String

    public init(
        id: String, timeUSec: UInt64, feature: String, count: UInt32, client: String, user: String, host: String,
        token: String, uid: UInt32, reason: String
    ) {
        (self.id, self.timeUSec, self.feature, self.count) = (id, timeUSec, feature, count)
        (self.client, self.user, self.host, self.token) = (client, user, host, token)
        (self.uid, self.reason) = (uid, reason)
    }

    public init?(_ value: BusValue) {
        guard let f = value.structValue, f.count == 10, case .uint64(let time) = f[1], case .uint32(let count) = f[3],
            case .uint32(let uid) = f[8]
        else { return nil }
        let s = [0, 2, 4, 5, 6, 7, 9].compactMap { f[$0].stringValue }
        guard s.count == 7 else { return nil }
        self.init(
            id: s[0], timeUSec: time, feature: s[1], count: count, client: s[2], user: s[3], host: s[4], token: s[5],
            uid: uid, reason: s[6])
    }

    public var busValue: BusValue {
        .structure([
            .string(id), .uint64(timeUSec), .string(feature), .uint32(count), .string(client), .string(user),
            .string(host), .string(token), .uint32(uid), .string(reason)
        ])
    }
}

/// GetUsageHistory: one bucket (its start, the peak in use, the seats owned, acquisitions, denials).
public struct UsageBucketRow: BusRow {
    public static let signature = "(tuuuu)"
    public var startUSec: UInt64
    public var maxInUse, seats, acquisitions, denials: UInt32

    public init(startUSec: UInt64, maxInUse: UInt32, seats: UInt32, acquisitions: UInt32, denials: UInt32) {
        (self.startUSec, self.maxInUse, self.seats, self.acquisitions, self.denials) = (
            startUSec, maxInUse, seats, acquisitions, denials
        )
    }

    public init?(_ value: BusValue) {
        guard let f = value.structValue, f.count == 5, case .uint64(let start) = f[0],
            case .uint32(let peak) = f[1], case .uint32(let seats) = f[2], case .uint32(let acquisitions) = f[3],
            case .uint32(let denials) = f[4]
        else { return nil }
        self.init(startUSec: start, maxInUse: peak, seats: seats, acquisitions: acquisitions, denials: denials)
    }

    public var busValue: BusValue {
        .structure([.uint64(startUSec), .uint32(maxInUse), .uint32(seats), .uint32(acquisitions), .uint32(denials)])
    }
}

/// GetUsageReport: one group (a user, host, feature or client), how many sessions or denials
/// it had, and the seat-seconds its sessions held in the range (0 for denials).
public struct UsageReportRow: BusRow {
    public static let signature = "(stt)"
    public var group: String
    public var count, seatSeconds: UInt64

    public init(group: String, count: UInt64, seatSeconds: UInt64) {
        (self.group, self.count, self.seatSeconds) = (group, count, seatSeconds)
    }

    public init?(_ value: BusValue) {
        guard let f = value.structValue, f.count == 3, let group = f[0].stringValue, case .uint64(let n) = f[1],
            case .uint64(let s) = f[2]
        else { return nil }
        self.init(group: group, count: n, seatSeconds: s)
    }

    public var busValue: BusValue { .structure([.string(group), .uint64(count), .uint64(seatSeconds)]) }
}

/// ListQueue: one acquisition waiting for a seat, in its feature's queue order.
public struct QueueRow: BusRow {
    public static let signature = "(sususstt)"
    public var feature: String
    public var position: UInt32
    public var client: String
    public var count: UInt32
    public var user, host: String
    public var sinceUSec, untilUSec: UInt64

    public init(
        feature: String, position: UInt32, client: String, count: UInt32, user: String, host: String,
        sinceUSec: UInt64, untilUSec: UInt64
    ) {
        (self.feature, self.position, self.client, self.count) = (feature, position, client, count)
        (self.user, self.host, self.sinceUSec, self.untilUSec) = (user, host, sinceUSec, untilUSec)
    }

    public init?(_ value: BusValue) {
        guard let f = value.structValue, f.count == 8, case .uint32(let position) = f[1],
            case .uint32(let count) = f[3], case .uint64(let since) = f[6], case .uint64(let until) = f[7]
        else { return nil }
        let s = [0, 2, 4, 5].compactMap { f[$0].stringValue }
        guard s.count == 4 else { return nil }
        self.init(
            feature: s[0], position: position, client: s[1], count: count, user: s[2], host: s[3], sinceUSec: since,
            untilUSec: until)
    }

    public var busValue: BusValue {
        .structure([
            .string(feature), .uint32(position), .string(client), .uint32(count), .string(user), .string(host),
            .uint64(sinceUSec), .uint64(untilUSec)
        ])
    }
}

/// ListBorrows: seats taken to a machine that is away (`tandemctl client borrow`).
public struct BorrowRow: BusRow {
    public static let signature = "(ssusssttt)"
    public var leaseId, feature: String
    public var count: UInt32
    public var machineId, user, host: String
    public var acquiredUSec, expiresUSec: UInt64
    /// When an administrator revoked it (0: not revoked).
    public var revokedUSec: UInt64

    public init(
        leaseId: String, feature: String, count: UInt32, machineId: String, user: String, host: String,
        acquiredUSec: UInt64, expiresUSec: UInt64, revokedUSec: UInt64
    ) {
        (self.leaseId, self.feature, self.count, self.machineId) = (leaseId, feature, count, machineId)
        (self.user, self.host, self.acquiredUSec) = (user, host, acquiredUSec)
        (self.expiresUSec, self.revokedUSec) = (expiresUSec, revokedUSec)
    }

    public init?(_ value: BusValue) {
        guard var r = FieldReader(value, count: 9), let id = r.string(), let feature = r.string(),
            let count = r.uint32(), let machine = r.string(), let user = r.string(), let host = r.string(),
            let acquired = r.uint64(), let expires = r.uint64(), let revoked = r.uint64()
        else { return nil }
        self.init(
            leaseId: id, feature: feature, count: count, machineId: machine, user: user, host: host,
            acquiredUSec: acquired, expiresUSec: expires, revokedUSec: revoked)
    }

    public var busValue: BusValue {
        .structure([
            .string(leaseId), .string(feature), .uint32(count), .string(machineId), .string(user), .string(host),
            .uint64(acquiredUSec), .uint64(expiresUSec), .uint64(revokedUSec)
        ])
    }
}
