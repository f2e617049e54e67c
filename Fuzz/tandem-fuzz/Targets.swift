import Crypto
import Foundation
import TandemAPI
import TandemConfig
import TandemCore
import TandemLicensing
import TandemPair
import TandemPeer

/// One parser of outside input, driven with arbitrary bytes. A target returns normally for any
/// input the parser refuses; it traps (which libFuzzer reports as a crash, with the input) when
/// the parser crashes or accepts something that breaks the property the target checks.
struct FuzzTarget: Sendable {
    let name: String
    let what: String
    let run: @Sendable ([UInt8]) -> Void
    /// Inputs the parser accepts, for the committed corpus (`tandem-fuzz seeds DIR`).
    let seeds: @Sendable () -> [[UInt8]]
}

/// Stops the run with a reason; libFuzzer saves the input that led here.
func violated(_ property: String, _ input: [UInt8]) -> Never {
    let shown = String(decoding: input.prefix(512), as: UTF8.self)
    fatalError("\(property)\ninput (\(input.count) bytes): \(shown.debugDescription)")
}

enum FuzzTargets {
    static let all: [FuzzTarget] = [license, config, wire, frame, acquire]

    static func named(_ name: String) -> FuzzTarget? { all.first { $0.name == name } }

    // MARK: - Licenses

    /// The vendor key the license seeds are signed with (fixed, so the corpus stays valid).
    static let vendorKey = try! PrivateSigningKey(rawRepresentation: Data(repeating: 7, count: 32))
    static let trusted = TrustedKeys([vendorKey.publicKey])

    /// The license parser and verifier. Property: a document is accepted only in its one
    /// canonical form (what `LicenseDocument.text` renders), up to the two things the parser
    /// documents as forgiven: CRLF line ends and blank lines around the document.
    static let license = FuzzTarget(
        name: "license", what: "license document parser and signature verifier",
        run: { input in
            let text = String(decoding: input, as: UTF8.self)
            guard let doc = try? LicenseDocument.parse(text) else { return }
            if forgiven(text) != doc.text { violated("a license was accepted in a non-canonical form", input) }
            guard let verified = try? trusted.verify(text) else { return }
            if verified != doc { violated("verification returned another document than parsing", input) }
        },
        seeds: {
            let docs = [
                LicenseDocument(
                    id: "FUZZ-1", product: "Fuzz Suite", feature: "cad", seats: 10, notAfter: "2030-12-31",
                    issuedTo: ["0123456789abcdef"], issuedAt: "2026-12-01", keyId: ""),
                LicenseDocument(
                    id: "FUZZ-2", product: "P", feature: "sim", seats: 1, notAfter: nil,
                    issuedTo: ["a", "b"], issuedAt: "2026-01-01", keyId: "")
            ]
            return docs.map { Array(try! vendorKey.sign($0).text.utf8) }
        })

    /// The text `LicenseDocument.parse` reads after forgiving CRLF and surrounding blank lines.
    static func forgiven(_ text: String) -> String {
        var lines = text.replacingOccurrences(of: "\r\n", with: "\n")
            .split(separator: "\n", omittingEmptySubsequences: false)
        func blank(_ l: Substring) -> Bool { l.trimmingCharacters(in: .whitespaces).isEmpty }
        while let f = lines.first, blank(f) { lines.removeFirst() }
        while let l = lines.last, blank(l) { lines.removeLast() }
        return lines.map { $0 + "\n" }.joined()
    }

    // MARK: - Configuration

    /// tandemd.conf: the INI reader and every setting's parser. Property: no crash, and a
    /// refusal always names the file it is about.
    static let config = FuzzTarget(
        name: "config", what: "tandemd.conf reader and settings",
        run: { input in
            var ini = IniFile()
            do {
                try ini.parse(String(decoding: input, as: UTF8.self), file: "fuzz.conf")
                _ = try DaemonConfig.parse(ini)
            } catch let error as ConfigError {
                if error.file != "fuzz.conf" { violated("a refusal named no place: \(error)", input) }
            } catch { violated("a refusal that is not a ConfigError: \(error)", input) }
        },
        seeds: {
            [
                "[Server]\nListen=127.0.0.1:7390 [::1]:7390\nDefaultLeaseSec=300\nMaxLeaseSec=86400\n"
                    + "AdminGroup=tandem-admin\nMaxConnections=4096\nIdleTimeoutSec=30\n",
                "[Pair]\nKeyFile=/etc/tandem/pair.key\nListen=0.0.0.0:7391\nWitness=10.0.0.3\n"
                    + "PartitionPolicy=split\nSplitPrimaryPercent=60\nFailoverTimeoutSec=3\n"
            ].map { Array($0.utf8) }
        })

    // MARK: - The pair link

    static let sampleEntries: [LogEntry] = [
        LogEntry(seq: 1, epoch: 1, change: .serverIdSet(id: "0123456789abcdef")),
        LogEntry(
            seq: 2, epoch: 1,
            change: .leaseGranted(
                Lease(
                    id: "lease-1", feature: "cad", client: "ws-1", count: 2, uid: 1000, requestId: "r-1",
                    acquiredUSec: 1_000_000, expiresUSec: 301_000_000, ttlUSec: 300_000_000, epoch: 1))),
        LogEntry(seq: 3, epoch: 2, change: .leaseRenewed(id: "lease-1", expiresUSec: 601_000_000)),
        LogEntry(
            seq: 4, epoch: 2,
            change: .reservationAdded(Reservation(id: "res-1", feature: "cad", holder: "ws-9", count: 1))),
        LogEntry(seq: 5, epoch: 2, change: .leasesMerged(epoch: 1, through: 3)),
        // A lease taken with a named token (tag 12), an audit record (tag 13).
        LogEntry(
            seq: 6, epoch: 2,
            change: .leaseGranted(
                Lease(
                    id: "lease-2", feature: "cad", client: "ws-2", count: 1, uid: nil, token: "plant-a",
                    requestId: nil, acquiredUSec: 2_000_000, expiresUSec: 302_000_000, ttlUSec: 300_000_000,
                    epoch: 2))),
        LogEntry(
            seq: 7, epoch: 2,
            change: .audited(
                AuditRecord(
                    id: "audit-1", timeUSec: 3_000_000, serverId: "0123456789abcdef", action: "Reserve", via: .dbus,
                    uid: 1000, user: "alice", arguments: ["feature": "cad", "seats": "1"], result: "AccessDenied",
                    detail: "Reserve needs an administrator"))),
        // A lease with its holder's names (tag 14), a timed revocation (15), a denial (16).
        LogEntry(
            seq: 8, epoch: 2,
            change: .leaseGranted(
                Lease(
                    id: "lease-3", feature: "cad", client: "ws-3", count: 2, uid: 1000, token: nil,
                    holder: Holder(user: "ann", host: "ws-3.example"), requestId: "r-3", acquiredUSec: 4_000_000,
                    expiresUSec: 304_000_000, ttlUSec: 300_000_000, epoch: 2))),
        LogEntry(seq: 9, epoch: 2, change: .leaseReleased(id: "lease-3", atUSec: 5_000_000, revoked: true)),
        LogEntry(
            seq: 10, epoch: 2,
            change: .acquisitionDenied(
                Denial(
                    id: "deny-1", timeUSec: 6_000_000, feature: "cad", count: 3, client: "ws-4",
                    holder: Holder(user: "bob", host: nil), uid: nil, token: "plant-a", reason: .reservedForOthers)))
    ]

    static let sampleMessages: [PairMessage] = [
        .append(epoch: 2, prevSeq: 1, prevEpoch: 1, entries: sampleEntries, leaderLastSeq: 5),
        .ack(epoch: 2, matchSeq: 5, caughtUp: true),
        .mismatch(epoch: 2, lastSeq: 9, epochTable: [EpochRange(epoch: 1, lastSeq: 3)]),
        .snapshot(epoch: 2, seq: 5, seqEpoch: 2, part: 0, parts: 1, changes: sampleEntries.map(\.change)),
        .renew(epoch: 2, recordSeq: 5, recordEpoch: 2, sentAt: 7),
        .renewed(epoch: 2, recordedSeq: nil, sentAt: 7),
        .merge(epoch: 3, entries: Array(sampleEntries.suffix(2))),
        .leaving(epoch: 3, lastSeq: 7, forGood: true)
    ]

    /// The pair's binary message codec. Property: what decodes encodes back to the same message.
    static let wire = FuzzTarget(
        name: "wire", what: "pair message codec (binary frames)",
        run: { input in
            guard let message = try? PairMessage(wire: input) else { return }
            guard let again = try? PairMessage(wire: message.wire), again == message else {
                violated("a decoded pair message does not survive encoding: \(message)", input)
            }
        },
        seeds: { sampleMessages.map(\.wire) })

    static let pairKeyBytes = [UInt8](repeating: 9, count: 32)
    static let pairKey = try! PairKey(bytes: pairKeyBytes)

    /// The pair link's frame opener. The input is a frame after its magic and before its tag
    /// (boot id, counter, time, body); the target authenticates it with the pair key, so the
    /// fuzzer reaches the decoders behind the MAC. Properties: an opened message seals and opens
    /// to itself, and the raw input (no valid tag) is never accepted.
    static let frame = FuzzTarget(
        name: "frame", what: "pair link frame opener and message decoders",
        run: { input in
            var raw = FrameOpener(key: pairKey)
            if case .success = raw.open(input, now: 0) { violated("a frame without a valid tag was opened", input) }
            var frame = FrameSealer.magic + input
            frame += Array(HMAC<SHA256>.authenticationCode(for: frame, using: SymmetricKey(data: pairKeyBytes)))
            let sent = frame.count >= 28 ? frame[20..<28].reduce(UInt64(0)) { $0 << 8 | UInt64($1) } : 0
            var opener = FrameOpener(key: pairKey)
            guard case .success(let message) = opener.open(frame, now: sent) else { return }
            var sealer = FrameSealer(key: pairKey, bootId: 1)
            var fresh = FrameOpener(key: pairKey)
            guard case .success(message) = fresh.open(sealer.seal(message, now: 5), now: 5) else {
                violated("an opened frame's message does not seal and open to itself: \(message)", input)
            }
        },
        seeds: {
            let info = PeerInfo(
                serverId: "0123456789abcdef", role: "primary", preparedFor: nil, serverIdUsed: true,
                licensesActive: true)
            let messages: [LinkMessage] =
                [.probe(nonce: 1), .probeReply(nonce: 1, info: info), .unpair(nonce: 2)]
                + sampleMessages.prefix(2).map { .pair($0) }
            return messages.map { m in
                var sealer = FrameSealer(key: pairKey, bootId: 1)
                let sealed = sealer.seal(m, now: 1_000_000)
                return Array(sealed.dropFirst(FrameSealer.magic.count).dropLast(32))
            }
        })

    // MARK: - The network API

    /// `POST /v1/leases` bodies. Property: an accepted body is within the documented ranges.
    static let acquire = FuzzTarget(
        name: "acquire", what: "network API acquisition body",
        run: { input in
            guard let body = try? AcquireBody(json: Data(input)) else { return }
            if body.count < 1 || body.count > Validate.maxCount {
                violated("an acquisition of \(body.count) seats was accepted", input)
            }
            if let ttl = body.ttlSec, ttl < 1 || ttl > 100 * 365 * 86_400 {
                violated("a lease time of \(ttl) s was accepted", input)
            }
        },
        seeds: {
            [
                #"{"feature":"cad","client":"ws-1"}"#,
                #"{"feature":"cad","client":"ws-1","count":3,"request_id":"r-1","ttl_sec":600}"#
            ].map { Array($0.utf8) }
        })
}
