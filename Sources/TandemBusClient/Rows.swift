/// The rows of the Manager's list methods, as the daemon writes them and clients read them.
public protocol BusRow: Sendable, Equatable {
    /// The row's struct signature, e.g. `(sssu)`.
    static var signature: String { get }
    var busValue: BusValue { get }
    /// Reads a row; nil when `value` is not a row of this kind.
    init?(_ value: BusValue)
}

extension BusRow {
    /// An array of rows, as a method returns it.
    public static func array(_ rows: [Self]) -> BusValue {
        .array(elementSignature: signature, rows.map(\.busValue))
    }

    /// The rows of a method's reply (its first value); throws when they are not of this kind.
    public static func rows(_ reply: [BusValue]) throws(BusError) -> [Self] {
        let values = reply.first?.arrayValue ?? []
        return try values.map { (v: BusValue) throws(BusError) -> Self in
            guard let row = Self(v) else {
                throw BusError(
                    name: "org.freedesktop.DBus.Error.InvalidSignature",
                    message: "expected rows \(signature), got \(v.signature)")
            }
            return row
        }
    }
}

/// Reads the fields of a struct value in order.
struct FieldReader {
    var fields: ArraySlice<BusValue>
    init?(_ value: BusValue, count: Int) {
        guard let f = value.structValue, f.count == count else { return nil }
        fields = f[...]
    }
    mutating func string() -> String? { fields.popFirst()?.stringValue }
    mutating func uint32() -> UInt32? {
        guard case .uint32(let n)? = fields.popFirst() else { return nil }
        return n
    }
    mutating func uint64() -> UInt64? {
        guard case .uint64(let n)? = fields.popFirst() else { return nil }
        return n
    }
}

/// ListLicenses: one active license and its share of the feature's use.
public struct LicenseRow: BusRow {
    public static let signature = "(sssuuut)"
    public var id, product, feature: String
    public var seats, inUse, reserved: UInt32
    public var notAfterUSec: UInt64

    public init(
        id: String, product: String, feature: String, seats: UInt32, inUse: UInt32, reserved: UInt32,
        notAfterUSec: UInt64
    ) {
        (self.id, self.product, self.feature) = (id, product, feature)
        (self.seats, self.inUse, self.reserved, self.notAfterUSec) = (seats, inUse, reserved, notAfterUSec)
    }

    public init?(_ value: BusValue) {
        guard var r = FieldReader(value, count: 7), let id = r.string(), let product = r.string(),
            let feature = r.string(),
            let seats = r.uint32(), let inUse = r.uint32(), let reserved = r.uint32(), let notAfter = r.uint64()
        else { return nil }
        self.init(
            id: id, product: product, feature: feature, seats: seats, inUse: inUse, reserved: reserved,
            notAfterUSec: notAfter)
    }

    public var busValue: BusValue {
        .structure([
            .string(id), .string(product), .string(feature), .uint32(seats), .uint32(inUse), .uint32(reserved),
            .uint64(notAfterUSec)
        ])
    }
}

/// ListLeases: one active lease.
public struct LeaseRow: BusRow {
    public static let signature = "(sssutt)"
    public var id, feature, client: String
    public var count: UInt32
    public var acquiredUSec, expiresUSec: UInt64

    public init(id: String, feature: String, client: String, count: UInt32, acquiredUSec: UInt64, expiresUSec: UInt64) {
        (self.id, self.feature, self.client, self.count) = (id, feature, client, count)
        (self.acquiredUSec, self.expiresUSec) = (acquiredUSec, expiresUSec)
    }

    public init?(_ value: BusValue) {
        guard var r = FieldReader(value, count: 6), let id = r.string(), let feature = r.string(),
            let client = r.string(),
            let count = r.uint32(), let acquired = r.uint64(), let expires = r.uint64()
        else { return nil }
        self.init(id: id, feature: feature, client: client, count: count, acquiredUSec: acquired, expiresUSec: expires)
    }

    public var busValue: BusValue {
        .structure([
            .string(id), .string(feature), .string(client), .uint32(count), .uint64(acquiredUSec), .uint64(expiresUSec)
        ])
    }
}

/// ListReservations: seats set aside for a holder.
public struct ReservationRow: BusRow {
    public static let signature = "(sssu)"
    public var id, feature, holder: String
    public var count: UInt32

    public init(id: String, feature: String, holder: String, count: UInt32) {
        (self.id, self.feature, self.holder, self.count) = (id, feature, holder, count)
    }

    public init?(_ value: BusValue) {
        guard var r = FieldReader(value, count: 4), let id = r.string(), let feature = r.string(),
            let holder = r.string(),
            let count = r.uint32()
        else { return nil }
        self.init(id: id, feature: feature, holder: holder, count: count)
    }

    public var busValue: BusValue { .structure([.string(id), .string(feature), .string(holder), .uint32(count)]) }
}

/// GetUsage: one feature's seats (in use + reserved + available = seats while the seats cover the use).
public struct UsageRow: BusRow {
    public static let signature = "(suuuut)"
    public var feature: String
    public var seats, inUse, reserved, available: UInt32
    public var denied: UInt64

    public init(feature: String, seats: UInt32, inUse: UInt32, reserved: UInt32, available: UInt32, denied: UInt64) {
        (self.feature, self.seats, self.inUse, self.reserved, self.available, self.denied) =
            (feature, seats, inUse, reserved, available, denied)
    }

    public init?(_ value: BusValue) {
        guard var r = FieldReader(value, count: 6), let feature = r.string(), let seats = r.uint32(),
            let inUse = r.uint32(),
            let reserved = r.uint32(), let available = r.uint32(), let denied = r.uint64()
        else { return nil }
        self.init(
            feature: feature, seats: seats, inUse: inUse, reserved: reserved, available: available, denied: denied)
    }

    public var busValue: BusValue {
        .structure([
            .string(feature), .uint32(seats), .uint32(inUse), .uint32(reserved), .uint32(available), .uint64(denied)
        ])
    }
}

/// ListAudit: one administrative action, done (`result` "ok") or refused (the error's name).
public struct AuditRow: BusRow {
    public static let signature = "(stsssussa{ss}ss)"
    /// The uid of a caller without one (over the network, a signal), as systemd writes it.
    public static let noUid = UInt32.max
    public var id: String
    public var timeUSec: UInt64
    public var serverId, action, via: String
    public var uid: UInt32
    public var user, token: String
    public var arguments: [String: String]
    public var result, detail: String

    public init(
        id: String, timeUSec: UInt64, serverId: String, action: String, via: String, uid: UInt32, user: String,
        token: String, arguments: [String: String], result: String, detail: String
    ) {
        (self.id, self.timeUSec, self.serverId, self.action, self.via) = (id, timeUSec, serverId, action, via)
        (self.uid, self.user, self.token, self.arguments) = (uid, user, token, arguments)
        (self.result, self.detail) = (result, detail)
    }

    public init?(_ value: BusValue) {
        guard let f = value.structValue, f.count == 11, case .uint64(let time) = f[1], case .uint32(let uid) = f[5],
            let items = f[8].arrayValue
        else { return nil }
        var arguments: [String: String] = [:]
        for item in items {
            guard case .dictEntry(let k, let v) = item, let key = k.stringValue, let text = v.stringValue else {
                return nil
            }
            arguments[key] = text
        }
        let s = [0, 2, 3, 4, 6, 7, 9, 10].compactMap { f[$0].stringValue }
        guard s.count == 8 else { return nil }
        self.init(
            id: s[0], timeUSec: time, serverId: s[1], action: s[2], via: s[3], uid: uid, user: s[4], token: s[5],
            arguments: arguments, result: s[6], detail: s[7])
    }

    public var busValue: BusValue {
        .structure([
            .string(id), .uint64(timeUSec), .string(serverId), .string(action), .string(via), .uint32(uid),
            .string(user), .string(token),
            .array(
                elementSignature: "{ss}",
                arguments.sorted { $0.key < $1.key }.map { .dictEntry(.string($0.key), .string($0.value)) }),
            .string(result), .string(detail)
        ])
    }
}
