import Foundation
import TandemCore

// The JSON types of the network API, shared by the server (TandemNet) and the client
// library (TandemClient). Keys are snake_case on the wire.

/// `GET /v1/server`.
public struct ServerStatus: Codable, Sendable, Equatable {
    public var serverId: String
    public var version: String
    public var role: String
    public var pairStatus: String
    public var serving: Bool
    public var epoch: UInt64
    public var peerAddress: String?
    public var peerServerId: String?
    /// The public key borrow certificates are signed with (`ed25519 <base64>`): the same on both
    /// nodes of a pair. `tandemctl client configure` keeps it as `BorrowKey=`.
    public var borrowKey: String?
    public init(
        serverId: String, version: String, role: String, pairStatus: String, serving: Bool, epoch: UInt64,
        peerAddress: String? = nil, peerServerId: String? = nil, borrowKey: String? = nil
    ) {
        self.borrowKey = borrowKey
        self.serverId = serverId
        self.version = version
        self.role = role
        self.pairStatus = pairStatus
        self.serving = serving
        self.epoch = epoch
        self.peerAddress = peerAddress
        self.peerServerId = peerServerId
    }
}

/// `POST /v1/leases` body.
public struct AcquireBody: Sendable, Equatable {
    public var feature: String
    public var count: UInt32
    public var client: String
    public var requestId: String?
    public var ttlSec: UInt64?
    /// The holder's login and host names, for the usage history.
    public var user: String?
    public var host: String?
    /// How long to wait for a seat when none is free (a held request, at most `maxWaitSec`).
    public var waitSec: UInt64?
    /// A borrow (`POST /v1/borrows`): seats for the machine `machineId` (its `/etc/machine-id`)
    /// for `borrowSec` seconds, with a signed certificate in the answer; never renewed.
    public var borrowSec: UInt64?
    public var machineId: String?
    /// The longest the network API holds a request waiting for a seat; a client that would wait
    /// longer asks again with the same request id (its place in the queue is kept).
    public static let maxWaitSec: UInt64 = 60
    public init(
        feature: String, count: UInt32, client: String, requestId: String? = nil, ttlSec: UInt64? = nil,
        user: String? = nil, host: String? = nil, waitSec: UInt64? = nil
    ) {
        self.waitSec = waitSec
        self.feature = feature
        self.count = count
        self.client = client
        self.requestId = requestId
        self.ttlSec = ttlSec
        self.user = user
        self.host = host
    }
}

/// A lease as the network API shows it.
public struct LeaseView: Codable, Sendable, Equatable {
    public var leaseId: String
    public var feature: String
    public var client: String
    public var count: UInt32
    public var acquiredAt: String
    public var expiresAt: String
    public var expiresUsec: UInt64
    public var ttlSec: UInt64
    public var serverId: String
    /// Who holds it (absent when not known): as given, and the network token's name.
    public var user: String?
    public var host: String?
    public var token: String?
    /// A borrow's machine, and when an administrator revoked it.
    public var machineId: String?
    public var revokedAt: String?
    /// A borrow's signed certificate (only in the answer to the borrow).
    public var certificate: String?

    public init(
        leaseId: String, feature: String, client: String, count: UInt32, acquiredAt: String, expiresAt: String,
        expiresUsec: UInt64, ttlSec: UInt64, serverId: String
    ) {
        self.leaseId = leaseId
        self.feature = feature
        self.client = client
        self.count = count
        self.acquiredAt = acquiredAt
        self.expiresAt = expiresAt
        self.expiresUsec = expiresUsec
        self.ttlSec = ttlSec
        self.serverId = serverId
    }

    public init(_ lease: Lease, serverId: String) {
        leaseId = lease.id
        feature = lease.feature
        client = lease.client
        count = lease.count
        acquiredAt = RFC3339.format(usec: lease.acquiredUSec)
        expiresAt = RFC3339.format(usec: lease.expiresUSec)
        expiresUsec = lease.expiresUSec
        ttlSec = lease.ttlUSec / usecPerSecond
        self.serverId = serverId
        (user, host, token) = (lease.user, lease.host, lease.token)
        machineId = lease.machineId
        revokedAt = lease.borrowRevokedUSec.map { RFC3339.format(usec: $0) }
    }
}

public enum RFC3339 {
    /// "2026-11-29T17:40:00Z" (UTC, whole seconds).
    public static func format(usec: UInt64) -> String { CivilDate.formatInstant(usec: usec) }
}

/// A feature's row of `GET /v1/features`.
public struct FeatureRow: Codable, Sendable, Equatable {
    public var feature: String
    public var seats: UInt32
    public var inUse: UInt32
    public var reserved: UInt32
    public var available: UInt32
    public var denied: UInt64
    public init(feature: String, seats: UInt32, inUse: UInt32, reserved: UInt32, available: UInt32, denied: UInt64) {
        self.feature = feature
        self.seats = seats
        self.inUse = inUse
        self.reserved = reserved
        self.available = available
        self.denied = denied
    }
}

/// RFC 9457 problem details as the API sends them.
public struct ProblemBody: Codable, Sendable, Equatable {
    public var type: String
    public var title: String
    public var status: Int
    public var detail: String
    /// With `NotServing` (503): the network address of the node that serves now, when known.
    public var servingAddress: String?
    public static let typePrefix = "urn:tandem:problem:"
    /// The error name (`InsufficientSeats`), the same as the D-Bus error's last part.
    public var name: String { type.hasPrefix(Self.typePrefix) ? String(type.dropFirst(Self.typePrefix.count)) : type }

    public init(name: String, status: Int, detail: String) {
        type = Self.typePrefix + name
        // "InsufficientSeats" -> "Insufficient Seats"
        var t = ""
        for (i, ch) in name.enumerated() {
            if i > 0, ch.isUppercase, let prev = t.last, prev.isLowercase { t.append(" ") }
            t.append(ch)
        }
        title = t
        self.status = status
        self.detail = detail
    }
}

/// A JSON value, to check types and keys strictly.
private enum JSONValue: Decodable {
    case bool(Bool), int(Int64), double(Double), string(String), null, other
    init(from decoder: Decoder) throws {
        let c = try decoder.singleValueContainer()
        if c.decodeNil() {
            self = .null
        } else if let b = try? c.decode(Bool.self) {
            self = .bool(b)
        } else if let i = try? c.decode(Int64.self) {
            self = .int(i)
        } else if let d = try? c.decode(Double.self) {
            self = .double(d)
        } else if let s = try? c.decode(String.self) {
            self = .string(s)
        } else {
            self = .other
        }
    }
}

extension AcquireBody {
    /// Parses the acquisition body strictly: a JSON object with only the known keys, each of its
    /// JSON type (a count of "1" is refused), every value in range.
    /// `borrow`: the body of `POST /v1/borrows` (with `borrow_sec` and `machine_id`, without
    /// `ttl_sec` and `wait_sec`), else of `POST /v1/leases`.
    public init(json data: Data, borrow: Bool = false) throws(TandemError) {
        guard let dict = try? JSONDecoder().decode([String: JSONValue].self, from: data) else {
            throw TandemError(.invalidArgs, "the body must be a JSON object")
        }
        let known: Set =
            borrow
            ? ["feature", "count", "client", "request_id", "user", "host", "borrow_sec", "machine_id"]
            : ["feature", "count", "client", "request_id", "ttl_sec", "user", "host", "wait_sec"]
        if let unknown = dict.keys.sorted().first(where: { !known.contains($0) }) {
            throw TandemError(.invalidArgs, "unknown field \(quoted(unknown))")
        }
        func string(_ k: String) throws(TandemError) -> String? {
            switch dict[k] {
            case nil: return nil
            case .string(let s)?: return s
            default: throw TandemError(.invalidArgs, "\(quoted(k)) must be a string")
            }
        }
        func integer(_ k: String) throws(TandemError) -> Int64? {
            switch dict[k] {
            case nil: return nil
            case .int(let i)?: return i
            default: throw TandemError(.invalidArgs, "\(quoted(k)) must be a whole number")
            }
        }
        guard let feature = try string("feature") else { throw TandemError(.invalidArgs, "'feature' is required") }
        guard let client = try string("client") else { throw TandemError(.invalidArgs, "'client' is required") }
        let count = try integer("count") ?? 1
        guard count >= 1 && count <= Int64(Validate.maxCount) else {
            throw TandemError(.invalidArgs, "'count' must be from 1 to \(Validate.maxCount)")
        }
        let ttl = try integer("ttl_sec")
        if let ttl, ttl < 1 || ttl > 100 * 365 * 86_400 { throw TandemError(.invalidArgs, "'ttl_sec' is out of range") }
        let wait = try integer("wait_sec")
        if let wait, wait < 0 || wait > Int64(Self.maxWaitSec) {
            throw TandemError(.invalidArgs, "'wait_sec' must be from 0 to \(Self.maxWaitSec)")
        }
        self.init(
            feature: feature, count: UInt32(count), client: client, requestId: try string("request_id"),
            ttlSec: ttl.map { UInt64($0) }, user: try string("user"), host: try string("host"),
            waitSec: wait.map { UInt64($0) })
        guard borrow else { return }
        guard let seconds = try integer("borrow_sec") else {
            throw TandemError(.invalidArgs, "'borrow_sec' is required")
        }
        guard seconds >= 1 && seconds <= 365 * 86_400 else {
            throw TandemError(.invalidArgs, "'borrow_sec' must be from 1 to \(365 * 86_400)")
        }
        guard let machine = try string("machine_id") else {
            throw TandemError(.invalidArgs, "'machine_id' is required")
        }
        (borrowSec, machineId) = (UInt64(seconds), machine)
    }
}

/// A request waiting for a seat, as `GET /v1/queue` shows it.
public struct QueueEntry: Codable, Sendable, Equatable {
    public var feature: String
    public var position: Int
    public var client: String
    public var count: UInt32
    public var user: String?
    public var host: String?
    public var since: String
    public var sinceUsec: UInt64
    public var untilUsec: UInt64
    public init(
        feature: String, position: Int, client: String, count: UInt32, user: String?, host: String?, since: String,
        sinceUsec: UInt64, untilUsec: UInt64
    ) {
        (self.feature, self.position, self.client, self.count) = (feature, position, client, count)
        (self.user, self.host, self.since, self.sinceUsec, self.untilUsec) = (user, host, since, sinceUsec, untilUsec)
    }
}
