import Crypto
import Foundation
import TandemTesting
import Testing
import TandemCore
import TandemPair
@testable import TandemPeer

@Suite struct PairLinkFrames {
    let key = PairKey.generate()
    let now: USec = 1_800_000_000_000_000

    @Test func sealedFramesOpenOnceAndOnlyUnderTheKey() {
        var sealer = FrameSealer(key: key, bootId: 7)
        var opener = FrameOpener(key: key)
        let m = LinkMessage.pair(.ack(epoch: 4, matchSeq: 10, caughtUp: true))
        let f1 = sealer.seal(m, now: now)
        #expect(opener.open(f1, now: now) == .success(m))
        // The same frame again is a replay; an older counter too.
        #expect(opener.open(f1, now: now) == .failure(.replayed))
        let f2 = sealer.seal(.probe(nonce: 1), now: now)
        let f3 = sealer.seal(.probe(nonce: 2), now: now)
        #expect(opener.open(f3, now: now) == .success(.probe(nonce: 2)))
        #expect(opener.open(f2, now: now) == .failure(.replayed))
        // Any altered byte, a truncated frame, or another key: unauthenticated.
        for i in [0, 5, 13, 21, f1.count / 2, f1.count - 1] {
            var bad = sealer.seal(m, now: now)
            bad[i] ^= 0x01
            #expect(opener.open(bad, now: now) == .failure(.unauthenticated), "byte \(i)")
        }
        #expect(opener.open(Array(f1.prefix(20)), now: now) == .failure(.unauthenticated))
        var other = FrameSealer(key: PairKey.generate(), bootId: 9)
        #expect(opener.open(other.seal(m, now: now), now: now) == .failure(.unauthenticated))
        // The tag is plain HMAC-SHA256 under the secret (what an older node computes), every time.
        let data: [UInt8] = Array("frame".utf8)
        let standard = Array(HMAC<SHA256>.authenticationCode(for: data, using: SymmetricKey(data: key.secret)))
        #expect(key.tag(data) == standard && key.tag(data) == standard)
        #expect(key.isValid(tag: standard, for: data) && !key.isValid(tag: standard, for: data + [0]))
    }

    @Test func aNewBootIsAcceptedOnlyWithinTheTimeWindow() {
        var opener = FrameOpener(key: key, windowUSec: 30_000_000)
        var old = FrameSealer(key: key, bootId: 1)
        let captured = old.seal(.probe(nonce: 1), now: now - 60_000_000)
        #expect(opener.open(captured, now: now) == .failure(.replayed))
        var fresh = FrameSealer(key: key, bootId: 2)
        #expect(
            opener.open(fresh.seal(.probe(nonce: 2), now: now + 10_000_000), now: now) == .success(.probe(nonce: 2)))
    }

    @Test func keyFilesAreWrittenPrivateAndBadOnesRefused() throws {
        let dir = makeTempDir("pairkey")
        let path = dir + "/pair.key"
        try key.write(path: path)
        let attrs = try FileManager.default.attributesOfItem(atPath: path)
        #expect((attrs[.posixPermissions] as? Int) == 0o600)
        #expect(throws: PairKeyError.self) { try key.write(path: path) }  // never overwrites
        let loaded = try PairKey.load(path: path)
        var s = FrameSealer(key: loaded)
        var o = FrameOpener(key: key)
        #expect(o.open(s.seal(.probe(nonce: 3), now: now), now: now) == .success(.probe(nonce: 3)))
        try "tandem-pair-key-v1 c2hvcnQ=\n".write(toFile: dir + "/short.key", atomically: true, encoding: .utf8)
        chmod(dir + "/short.key", 0o600)
        #expect(throws: PairKeyError.self) { try PairKey.load(path: dir + "/short.key") }
    }
}

@Suite struct Coalescing {
    func entry(_ seq: UInt64) -> LogEntry { LogEntry(seq: seq, epoch: 2, change: .leaseReleased(id: "l\(seq)")) }

    @Test func consecutiveAppendsMergeAndAcksKeepTheHighest() {
        let a1 = PairMessage.append(epoch: 2, prevSeq: 4, prevEpoch: 2, entries: [entry(5)], leaderLastSeq: 5)
        let a2 = PairMessage.append(epoch: 2, prevSeq: 5, prevEpoch: 2, entries: [entry(6), entry(7)], leaderLastSeq: 7)
        let gap = PairMessage.append(epoch: 2, prevSeq: 9, prevEpoch: 2, entries: [entry(10)], leaderLastSeq: 10)
        let out = PairMessage.coalesced([
            (.node(1), a1), (.node(1), a2), (.node(1), gap), (.witness, .releaseLease(epoch: 2))
        ])
        #expect(out.count == 3)
        #expect(
            out[0].1
                == .append(
                    epoch: 2, prevSeq: 4, prevEpoch: 2, entries: [entry(5), entry(6), entry(7)], leaderLastSeq: 7))
        #expect(out[1].1 == gap)
        let acks = PairMessage.coalesced([
            (.node(0), .ack(epoch: 2, matchSeq: 5, caughtUp: false)),
            (.node(0), .ack(epoch: 2, matchSeq: 9, caughtUp: true)),
            (.node(0), .ack(epoch: 2, matchSeq: 7, caughtUp: false)),
            (.node(0), .ack(epoch: 4, matchSeq: 3, caughtUp: false))
        ])
        #expect(
            acks.map(\.1) == [.ack(epoch: 2, matchSeq: 9, caughtUp: true), .ack(epoch: 4, matchSeq: 3, caughtUp: false)]
        )
    }
}

@Suite struct WireFormat {
    static let lease = Lease(
        id: "lease-1", feature: "cad", client: "ws-1", count: 2, uid: 1000, requestId: "r1",
        acquiredUSec: 1, expiresUSec: 1 << 40, ttlUSec: 300_000_000, epoch: 7)
    static func borrow(revoked: USec?) -> Lease {
        var l = Lease(
            id: "b1", feature: "cad", client: "laptop", count: 2, uid: nil, token: "t", requestId: "r",
            acquiredUSec: 5, expiresUSec: 6 + 86_400_000_000, ttlUSec: 86_400_000_000, epoch: 2)
        (l.machineId, l.borrowRevokedUSec) = ("3d1219c7c4c5404aaa1f6d2a48adfda4", revoked)
        return l
    }
    static let changes: [Change] = [
        .serverIdSet(id: "TS-1"),
        .licenseActivated(
            License(
                id: "L1", product: "P", feature: "cad", seats: 40, notAfterUSec: 0, issuedTo: ["TS-1", "TS-2"],
                keyId: "k", document: "doc\nwith ünïcode", activatedUSec: 99)),
        .licenseDeactivated(id: "L1"), .leaseGranted(lease),
        .leaseGranted(
            Lease(
                id: "l2", feature: "f", client: "", count: 1, uid: nil, requestId: nil, acquiredUSec: 0, expiresUSec: 0,
                ttlUSec: 0, epoch: 0)),
        // A token's name: tag 12 (tag 4 when there is none, as before token names).
        .leaseGranted(
            Lease(
                id: "l3", feature: "f", client: "c", count: 1, uid: nil, token: "cad-farm", requestId: "r",
                acquiredUSec: 5, expiresUSec: 6, ttlUSec: 1, epoch: 2)),
        .leaseRenewed(id: "lease-1", expiresUSec: UInt64.max), .leaseReleased(id: "lease-1"), .leaseExpired(id: "x"),
        // A borrow (tag 17), revoked and not, and its revocation (tag 18).
        .leaseGranted(WireFormat.borrow(revoked: nil)), .leaseGranted(WireFormat.borrow(revoked: 77)),
        .borrowRevoked(id: "b1", atUSec: 1 << 45),
        .reservationAdded(Reservation(id: "res", feature: "cad", holder: "h", count: 3)),
        .reservationRemoved(id: "res"),
        .epochStarted(epoch: 12), .leasesMerged(epoch: 5, through: 99),
        .audited(
            AuditRecord(
                id: "audit-1", timeUSec: 1 << 50, serverId: "TS-1", action: "Reserve", via: .dbus, uid: 1000,
                user: "ada", arguments: ["feature": "cad", "holder": "ws 1"], result: "ok")),
        .audited(
            AuditRecord(
                id: "audit-2", timeUSec: 3, serverId: "TS-2", action: "Release", via: .http, token: "farm",
                result: "AccessDenied", detail: "lease 'x' belongs to another token"))
    ]
    static let messages: [PairMessage] = [
        .append(
            epoch: 4, prevSeq: 10, prevEpoch: 3,
            entries: changes.enumerated().map { LogEntry(seq: UInt64(11 + $0.offset), epoch: 4, change: $0.element) },
            leaderLastSeq: 30),
        .append(epoch: 4, prevSeq: 10, prevEpoch: 3, entries: [], leaderLastSeq: 10),
        .ack(epoch: 4, matchSeq: 22, caughtUp: true), .ack(epoch: 4, matchSeq: 0, caughtUp: false),
        .mismatch(
            epoch: 4, lastSeq: 9, epochTable: [EpochRange(epoch: 2, lastSeq: 5), EpochRange(epoch: 3, lastSeq: 9)]),
        .stale(epoch: 8), .handoverRequest(epoch: 8), .handoverReady(epoch: 8, lastSeq: 100),
        .snapshot(epoch: 6, seq: 70, seqEpoch: 5, part: 1, parts: 3, changes: changes),
        .merge(epoch: 6, entries: [LogEntry(seq: 3, epoch: 5, change: .leaseGranted(lease))]),
        .voteRequest(epoch: 6, lastSeq: 3, lastEpoch: 5), .voteGranted(epoch: 6, leaseUSec: 2_500_000),
        .voteDenied(epoch: 6, votedEpoch: 7),
        .renew(epoch: 6, recordSeq: 9, recordEpoch: 6, sentAt: 1),
        .renew(epoch: 6, recordSeq: nil, recordEpoch: nil, sentAt: 2),
        .renewed(epoch: 6, recordedSeq: 9, sentAt: 1), .renewed(epoch: 6, recordedSeq: nil, sentAt: 1),
        .deposed(votedEpoch: 9), .releaseLease(epoch: 6),
        .leaving(epoch: 6, lastSeq: 70, forGood: false), .leaving(epoch: 7, lastSeq: 0, forGood: true)
    ]

    /// A lease without a token's name is written as before names existed (tag 4), so a peer of
    /// the previous version still reads what a tokenless server sends it.
    @Test func aLeaseWithoutATokenIsWrittenAsBeforeTokenNames() {
        var plain = WireWriter()
        Change.leaseGranted(Self.lease).write(to: &plain)
        var named = WireWriter()
        var withToken = Self.lease
        withToken.token = "cad-farm"
        Change.leaseGranted(withToken).write(to: &named)
        #expect(plain.bytes.first == 4 && named.bytes.first == 12)
        #expect(Array(named.bytes.dropFirst().prefix(plain.bytes.count - 1)) == Array(plain.bytes.dropFirst()))
    }

    @Test func everyMessageRoundTripsThroughTheBinaryFormAndTheFrame() throws {
        var sealer = FrameSealer(key: PairKey.generate(), bootId: 3)
        var opener = FrameOpener(key: sealer.key)
        for m in Self.messages {
            #expect(try PairMessage(wire: m.wire) == m)
            let frame = sealer.seal(.pair(m), now: 1_800_000_000_000_000)
            #expect(frame[28] == UInt8(ascii: "B"), "replication messages travel in binary")
            #expect(opener.open(frame, now: 1_800_000_000_000_000) == .success(.pair(m)))
        }
        // Binary is much smaller than the JSON it replaced.
        let append = Self.messages[0]
        #expect(append.wire.count * 2 < (try JSONEncoder().encode(append)).count)
    }

    @Test func truncatedOrUnknownBytesAreRefusedNotTrapped() throws {
        let wire = Self.messages[0].wire
        for n in [0, 1, 5, wire.count / 2, wire.count - 1] {
            #expect(throws: WireError.self) { try PairMessage(wire: Array(wire.prefix(n))) }
        }
        #expect(throws: WireError.self) { try PairMessage(wire: wire + [0]) }
        #expect(throws: WireError.self) { try PairMessage(wire: [99]) }
        #expect(throws: WireError.self) { try PairMessage(wire: [1] + Array(repeating: 0xFF, count: 20)) }
        // Authenticated but undecodable: malformed (a key holder sending garbage).
        var sealer = FrameSealer(key: PairKey.generate(), bootId: 4)
        var opener = FrameOpener(key: sealer.key)
        var frame = Array(
            sealer.seal(.pair(.ack(epoch: 1, matchSeq: 1, caughtUp: true)), now: 1_800_000_000_000_000).dropLast(32))
        frame[29] = 250  // unknown message tag
        frame += sealer.key.tag(frame)
        #expect(opener.open(frame, now: 1_800_000_000_000_000) == .failure(.malformed))
    }
}
