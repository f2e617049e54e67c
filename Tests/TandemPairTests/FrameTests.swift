import Foundation
import Testing
import TandemCore
import TandemPair
import TandemPeer

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
    }

    @Test func aNewBootIsAcceptedOnlyWithinTheTimeWindow() {
        var opener = FrameOpener(key: key, windowUSec: 30_000_000)
        var old = FrameSealer(key: key, bootId: 1)
        let captured = old.seal(.probe(nonce: 1), now: now - 60_000_000)
        #expect(opener.open(captured, now: now) == .failure(.replayed))
        var fresh = FrameSealer(key: key, bootId: 2)
        #expect(opener.open(fresh.seal(.probe(nonce: 2), now: now + 10_000_000), now: now) == .success(.probe(nonce: 2)))
    }

    @Test func keyFilesAreWrittenPrivateAndLooseOnesRefused() throws {
        let dir = NSTemporaryDirectory() + "pairkey-\(UInt32.random(in: 0...UInt32.max))"
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        let path = dir + "/pair.key"
        try key.write(path: path)
        let attrs = try FileManager.default.attributesOfItem(atPath: path)
        #expect((attrs[.posixPermissions] as? Int) == 0o600)
        #expect(throws: PairKeyError.self) { try key.write(path: path) } // never overwrites
        let loaded = try PairKey.load(path: path)
        var s = FrameSealer(key: loaded)
        var o = FrameOpener(key: key)
        #expect(o.open(s.seal(.probe(nonce: 3), now: now), now: now) == .success(.probe(nonce: 3)))
        chmod(path, 0o644)
        #expect(throws: PairKeyError.self) { try PairKey.load(path: path) }
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
        let out = PairMessage.coalesced([(.node(1), a1), (.node(1), a2), (.node(1), gap), (.witness, .releaseLease(epoch: 2))])
        #expect(out.count == 3)
        #expect(out[0].1 == .append(epoch: 2, prevSeq: 4, prevEpoch: 2, entries: [entry(5), entry(6), entry(7)], leaderLastSeq: 7))
        #expect(out[1].1 == gap)
        let acks = PairMessage.coalesced([(.node(0), .ack(epoch: 2, matchSeq: 5, caughtUp: false)),
                                          (.node(0), .ack(epoch: 2, matchSeq: 9, caughtUp: true)),
                                          (.node(0), .ack(epoch: 2, matchSeq: 7, caughtUp: false)),
                                          (.node(0), .ack(epoch: 4, matchSeq: 3, caughtUp: false))])
        #expect(acks.map(\.1) == [.ack(epoch: 2, matchSeq: 9, caughtUp: true), .ack(epoch: 4, matchSeq: 3, caughtUp: false)])
    }
}
