import Foundation
import TandemCore
import TandemPair

/// What a node reports about itself when probed (pairing workflow and status).
public struct PeerInfo: Sendable, Equatable, Codable {
    public var serverId: String
    /// `standalone`, `primary` or `backup`.
    public var role: String
    /// On a node prepared with PrepareBackup: the primary address it accepts.
    public var preparedFor: String?
    public var serverIdUsed: Bool
    public var licensesActive: Bool
    /// The port of the node's network API (0: none), so that clients learn the backup's address.
    public var apiPort: Int = 0
    /// The node's own view of the pair (shown by the peer, like the tech note's server tiles).
    public var pairStatus: String?
    public var serving: Bool?
    public var epoch: UInt64?
    /// How the node handles partitions (`PartitionMode.description`).
    public var partition: String?
    /// The digest of the node's usage policy (empty: none; nil from versions before policies).
    public var policyDigest: String?
    public init(serverId: String, role: String, preparedFor: String?, serverIdUsed: Bool, licensesActive: Bool) {
        self.serverId = serverId
        self.role = role
        self.preparedFor = preparedFor
        self.serverIdUsed = serverIdUsed
        self.licensesActive = licensesActive
    }
}

/// Everything sent on the pair link: the replication protocol, plus the pairing workflow.
public enum LinkMessage: Sendable, Equatable, Codable {
    case pair(PairMessage)
    /// Are you there, and who are you?
    case probe(nonce: UInt64)
    case probeReply(nonce: UInt64, info: PeerInfo)
    /// Primary -> prepared backup: form a pair whose log starts after (baseSeq, baseEpoch).
    /// `partition`: how the primary handles partitions (`PartitionMode.description`); both nodes must agree.
    case pairRequest(
        nonce: UInt64, primaryServerId: String, baseSeq: UInt64, baseEpoch: UInt64, baseState: [Change],
        partition: String)
    /// Backup -> primary: accepted, or refused with an error name and reason.
    case pairReply(nonce: UInt64, serverId: String, refusal: TandemErrorCode?, reason: String)
    /// Either node -> the other: the pair is dissolved.
    case unpair(nonce: UInt64)
    case unpairReply(nonce: UInt64)
}

/// Why a frame was refused.
public enum FrameRejection: String, Error, Sendable, CaseIterable {
    /// Too short, wrong magic, or the authentication tag does not match (wrong key, altered).
    case unauthenticated
    /// A frame counter already seen for its sender's boot, or a new boot outside the time window.
    case replayed
    /// Authenticated, but its payload does not decode.
    case malformed
    /// Authenticated and fresh, but of an epoch older than this node's (counted by the host).
    case staleEpoch = "stale-epoch"
}

/// Frames on the pair link (UDP datagrams):
///
///     "TDP1" | sender boot id (8) | counter (8, BE) | sent time, µs since the epoch (8, BE)
///            | payload | HMAC-SHA256 tag (32) over everything before it
///
/// The payload of a replication message (`LinkMessage.pair`) is "B" and its binary form
/// (`PairMessage.wire`); any other message is JSON (which starts with "{").
///
/// Each process draws a random boot id at start and numbers its frames from 1; receivers keep
/// the highest counter seen per boot id and accept only higher ones, and accept a boot id they
/// do not know only when its time is within `windowUSec` of their own clock. Together that
/// refuses altered frames, frames under another key, and replays (old boots included).
public struct FrameSealer: Sendable {
    public static let magic: [UInt8] = Array("TDP1".utf8)
    static let headerSize = 4 + 8 + 8 + 8
    static let tagSize = 32
    public let key: PairKey
    public let bootId: UInt64
    public private(set) var counter: UInt64 = 0
    static let encoder: JSONEncoder = JSONEncoder()
    static let binaryMark = UInt8(ascii: "B")

    public init(key: PairKey, bootId: UInt64 = UInt64.random(in: 1...UInt64.max)) {
        self.key = key
        self.bootId = bootId
    }

    public mutating func seal(_ message: LinkMessage, now: USec) -> [UInt8] {
        counter += 1
        var out = Self.magic
        out.reserveCapacity(Self.headerSize + 256 + Self.tagSize)
        Self.put(bootId, &out)
        Self.put(counter, &out)
        Self.put(now, &out)
        if case .pair(let m) = message {
            out.append(Self.binaryMark)
            out += m.wire
        } else {
            out += (try? Self.encoder.encode(message)).map(Array.init) ?? []
        }
        out += key.tag(out)
        return out
    }

    static func put(_ v: UInt64, _ out: inout [UInt8]) {
        for i in (0..<8).reversed() { out.append(UInt8(truncatingIfNeeded: v >> (UInt64(i) * 8))) }
    }

    static func get(_ b: ArraySlice<UInt8>, _ at: Int) -> UInt64 {
        var v: UInt64 = 0
        for i in 0..<8 { v = v << 8 | UInt64(b[b.startIndex + at + i]) }
        return v
    }
}

/// The receiving side: authentication, replay protection, decoding.
public struct FrameOpener: Sendable {
    public let key: PairKey
    public var windowUSec: USec
    /// Boot id -> (highest counter, last seen): bounded, least recently seen dropped first.
    var seen: [UInt64: (counter: UInt64, lastSeen: USec)] = [:]
    static let maxBoots = 64
    static let decoder = JSONDecoder()

    public init(key: PairKey, windowUSec: USec = 30 * usecPerSecond) {
        self.key = key
        self.windowUSec = windowUSec
    }

    public mutating func open(_ frame: [UInt8], now: USec) -> Result<LinkMessage, FrameRejection> {
        let min = FrameSealer.headerSize + FrameSealer.tagSize
        guard frame.count >= min, Array(frame[0..<4]) == FrameSealer.magic else { return .failure(.unauthenticated) }
        let body = frame[0..<(frame.count - FrameSealer.tagSize)]
        let tag = frame[(frame.count - FrameSealer.tagSize)...]
        guard key.isValid(tag: tag, for: body) else { return .failure(.unauthenticated) }
        let boot = FrameSealer.get(body, 4)
        let counter = FrameSealer.get(body, 12)
        let sent = FrameSealer.get(body, 20)
        if let known = seen[boot] {
            guard counter > known.counter else { return .failure(.replayed) }
        } else {
            let skew = sent > now ? sent - now : now - sent
            guard skew <= windowUSec else { return .failure(.replayed) }
            if seen.count >= Self.maxBoots, let oldest = seen.min(by: { $0.value.lastSeen < $1.value.lastSeen })?.key {
                seen[oldest] = nil
            }
        }
        let message: LinkMessage
        if body.count > FrameSealer.headerSize, body[FrameSealer.headerSize] == FrameSealer.binaryMark {
            guard let m = try? PairMessage(wire: Array(body), from: FrameSealer.headerSize + 1) else {
                return .failure(.malformed)
            }
            message = .pair(m)
        } else {
            guard let m = try? Self.decoder.decode(LinkMessage.self, from: Data(body[FrameSealer.headerSize...])) else {
                return .failure(.malformed)
            }
            message = m
        }
        seen[boot] = (counter, now)
        return .success(message)
    }
}
