import Foundation
import Logging
import TandemCore
import TandemPair
import TandemPeer
import TandemSystemd

public struct WitnessOptions: Sendable {
    public var listen = "0.0.0.0:7392"
    public var keyFile = "/etc/tandem/pair.key"
    public var stateDir: String?
    public var leaseSec = Double(PairSettings.defaultWitnessLeaseUSec) / 1e6
    public init() {}

    public var resolvedStateDir: String { stateDirectory(given: stateDir, fallback: "/var/lib/tandem-witness") }
}

/// tandem-witness: the pair's tie-breaker on a third machine. It answers vote and renewal
/// frames (authenticated with the pair key) and keeps durably only the last epoch it voted
/// for and the last log position a leader recorded with it (`witness.state`, written and
/// fsynced before any answer that depends on it).
public final class WitnessService {
    let options: WitnessOptions
    let logger: Logger
    var witness: PairWitness
    let socket: SealedSocket
    let statePath: String
    /// Frames refused, by reason.
    public var rejected: [FrameRejection: UInt64] { socket.rejected }

    public init(options: WitnessOptions, logger: Logger) throws {
        self.options = options
        self.logger = logger
        try SecretFile.check(options.keyFile, setting: "--key-file")
        let key: PairKey
        do { key = try PairKey.load(path: options.keyFile) } catch {
            throw ServiceError("--key-file=\(options.keyFile): \(error)")
        }
        let dir = options.resolvedStateDir
        try? FileManager.default.createDirectory(
            atPath: dir, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o700])
        statePath = dir + "/witness.state"
        let lease = USec(options.leaseSec * 1e6)
        var voted: UInt64 = 0, recEpoch: UInt64 = 0, recSeq: UInt64 = 0, votedLease: UInt64? = lease
        if let data = FileManager.default.contents(atPath: statePath) {
            let text = String(decoding: data, as: UTF8.self)
            let n = text.split(whereSeparator: { $0 == " " || $0 == "\n" }).compactMap { UInt64($0) }
            guard n.count == 3 || n.count == 4 else {
                throw ServiceError("\(statePath): damaged; expected three or four numbers")
            }
            (voted, recEpoch, recSeq) = (n[0], n[1], n[2])
            votedLease = n.count == 4 ? n[3] : nil
        }
        witness = PairWitness(
            leaseUSec: lease, now: SystemClock.monotonicUSec(), votedEpoch: voted, recordedEpoch: recEpoch,
            recordedSeq: recSeq, votedLeaseUSec: votedLease)
        do {
            socket = try SealedSocket(
                key: key, bind: SocketAddress(resolving: options.listen, defaultPort: 7392),
                clock: SystemClock.realtimeUSec, logger: logger, refusalLevel: .debug)
        } catch { throw ServiceError("Listen=\(options.listen): \(error)") }
    }

    public var boundAddress: String { socket.boundAddress }

    func persist() throws {
        let tmp = statePath + ".tmp"
        let text =
            "\(witness.votedEpoch) \(witness.recordedEpoch) \(witness.recordedSeq) \(witness.votedLeaseUSec)\n"
        let fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o600)
        guard fd >= 0 else { throw ServiceError("\(tmp): \(String(cString: strerror(errno)))") }
        let bytes = Array(text.utf8)
        let ok = write(fd, bytes, bytes.count) == bytes.count && fsync(fd) == 0
        close(fd)
        guard ok, rename(tmp, statePath) == 0 else {
            throw ServiceError("\(statePath): \(String(cString: strerror(errno)))")
        }
        let dfd = open((statePath as NSString).deletingLastPathComponent, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        if dfd >= 0 { fsync(dfd); close(dfd) }
    }

    /// Handles the waiting datagrams (up to `SealedSocket.readsPerWakeup`; the loop calls again).
    public func drain() throws {
        for (message, from) in socket.waitingFrames() {
            guard case .pair(let pm) = message else {
                if case .probe(let nonce) = message {
                    let info = PeerInfo(
                        serverId: "", role: "witness", preparedFor: nil, serverIdUsed: false, licensesActive: false)
                    socket.send(.probeReply(nonce: nonce, info: info), to: from)
                }
                continue
            }
            // Node 0 or 1 is told by the vote's epoch parity or the renewal's epoch.
            let node = NodeIndex(pm.epoch % 2)
            let before = (witness.votedEpoch, witness.recordedEpoch, witness.recordedSeq, witness.votedLeaseUSec)
            let out = witness.receive(from: node, pm, now: SystemClock.monotonicUSec())
            if (witness.votedEpoch, witness.recordedEpoch, witness.recordedSeq, witness.votedLeaseUSec) != before {
                try persist()
                if witness.votedEpoch != before.0 {
                    logger.notice(
                        "voted",
                        metadata: [
                            "epoch": "\(witness.votedEpoch)", "node": "\(PairRole(node: node))", "from": "\(from)"
                        ])
                    ServiceNotify.status("Voted for epoch \(witness.votedEpoch) (\(PairRole(node: node)))")
                }
            }
            for (_, reply) in out {
                if case .voteDenied(let e, let voted) = reply {
                    logger.info(
                        "vote denied",
                        metadata: [
                            "epoch": "\(e)", "voted_epoch": "\(voted)", "from": "\(from)",
                            "recorded": "\(witness.recordedEpoch)/\(witness.recordedSeq)"
                        ])
                }
                socket.send(.pair(reply), to: from)
            }
        }
    }

    /// Serves until SIGTERM or SIGINT.
    public func run() throws {
        var mask = sigset_t()
        sigemptyset(&mask)
        sigaddset(&mask, SIGTERM)
        sigaddset(&mask, SIGINT)
        pthread_sigmask(SIG_BLOCK, &mask, nil)
        let loop = try EventLoop()
        var failure: Error?
        let signals = try loop.onSignals([SIGTERM, SIGINT]) { _ in loop.exit(0) }
        let io = try loop.onReadable(socket.fd) { [self] in
            do { try drain() } catch {
                failure = error
                loop.exit(1)
            }
        }
        try loop.enableWatchdog()
        logger.notice(
            "tandem-witness started", metadata: ["listen": "\(boundAddress)", "voted_epoch": "\(witness.votedEpoch)"])
        ServiceNotify.ready(status: "Listening on \(boundAddress); last vote for epoch \(witness.votedEpoch)")
        _ = try withExtendedLifetime((signals, io)) { try loop.run() }
        if let failure { throw failure }
        logger.notice("tandem-witness stopped")
    }
}
