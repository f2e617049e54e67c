import CSystemd
import Foundation
import Logging
import TandemBus
import TandemBusClient
import TandemConfig
import TandemCore
import TandemSystemd
import TandemEngine
import TandemPair
import TandemPeer
import TandemStore

/// The daemon's side of the pair: the pair's membership (restored from the store), the frames
/// of the pair link (`PairLink`) routed to the engine's pair node, the protocol's clock, and the
/// pair's status. The pairing workflow is in `PairWorkflow.swift`. It runs on the event-loop
/// thread; the engine owns the PairNode.
final class PairHost: PairControl {
    let config: PairConfig
    unowned let engine: Engine
    let logger: Logger
    let link: PairLink
    let witness: SocketAddress?
    var settings: PairSettings
    // Pair membership (durable in the store's meta table).
    var role: PairRole = .standalone
    var peerAddressText = ""
    var peer: SocketAddress?
    var preparedFor: SocketAddress?
    var lastWitnessFrame: USec?
    /// Called when the pair's status may have changed, to emit PropertiesChanged and STATUS=.
    var onStatusChange: (() -> Void)?
    /// The pair status and serving as last logged.
    var lastLogged: (PairStatus, Bool)?
    /// This node's network API port, told to the peer; and what the peer told us.
    var apiPort = 0
    var peerInfo: PeerInfo?
    var peerInfoAt: USec?
    var lastPeerProbe: USec?
    var lastWitnessProbe: USec?
    /// When PrepareRemoval was called: a stop within `removalWindowUSec` tells the peer this
    /// server leaves for good. The package's prerm stops the service right after; a removal
    /// that failed there must not make a stop much later say "uninstalled".
    var removalPreparedAt: USec?
    static let removalWindowUSec: USec = 600 * 1_000_000
    var leavingForGood: Bool { removalPreparedAt.map { now < $0 + Self.removalWindowUSec } ?? false }

    init(config: PairConfig, engine: Engine, logger: Logger) throws {
        self.config = config
        self.engine = engine
        self.logger = logger
        guard let keyFile = config.keyFile else { throw ServiceError("[Pair] needs KeyFile=") }
        do {
            link = try PairLink(
                keyFile: keyFile, listen: SocketAddress(resolving: config.listen, defaultPort: PairConfig.defaultPort),
                clock: { [unowned engine] in engine.now }, logger: logger)
            witness = try config.witness.map { try SocketAddress(resolving: $0, defaultPort: PairConfig.witnessPort) }
        } catch let e as ServiceError { throw e } catch { throw ServiceError("[Pair]: \(error)") }
        settings = PairSettings()
        settings.heartbeatUSec = config.heartbeatUSec
        settings.failoverTimeoutUSec = config.failoverTimeoutUSec
        settings.witnessLeaseUSec = config.failoverTimeoutUSec * 5 / 6
        settings.handoverTimeoutUSec = config.failoverTimeoutUSec
        settings.compactKeep = config.logKeepEntries
        settings.compactRetain = UInt64(config.logRetainEntries)
        settings.partition = config.partitionMode
        try restore()
    }

    var boundAddress: String { link.boundAddress }
    /// The pair protocol's node, while paired.
    var node: PairNode? { engine.pair?.node }
    var now: USec { engine.now }

    /// Rebuilds the pair from the store after a restart.
    func restore() throws {
        let store = engine.store
        if let p = try store.preparedPrimary() {
            preparedFor = try? SocketAddress(resolving: p, defaultPort: PairConfig.defaultPort)
        }
        guard let record = try engine.restorePair(settings: settings) else { return }
        do { peer = try SocketAddress(resolving: record.peerAddress, defaultPort: PairConfig.defaultPort) } catch {
            throw ServiceError("stored peer address '\(record.peerAddress)': \(error)")
        }
        role = PairRole(node: record.node)
        peerAddressText = record.peerAddress
        logger.notice(
            "pair restored",
            metadata: [
                "role": "\(role)", "peer": "\(record.peerAddress)",
                "log_entries": "\(node.map { $0.log.count } ?? 0)",
                "epoch": "\(record.progress.promisedEpoch)", "partition": "\(settings.partition.description)",
                "unmerged": "\(record.progress.unmerged.count)"
            ])
    }

    func attach() {
        engine.onSend = { [unowned self] target, message in
            switch target {
            case .node: if let peer { send(.pair(message), to: peer) }
            case .witness: if let witness { send(.pair(message), to: witness) }
            }
        }
        engine.describeNode = { [unowned self] i in
            let isPeer = node.map { $0.index != i } ?? false
            return (i == 0 ? "the primary" : "the backup")
                + (isPeer && !peerAddressText.isEmpty ? " at \(peerAddressText)" : "")
        }
    }

    func send(_ message: LinkMessage, to address: SocketAddress) { link.send(message, to: address) }

    func ask(_ make: (UInt64) -> LinkMessage, to address: SocketAddress, done: @escaping (LinkMessage?) -> Void) {
        link.ask(make, to: address, done: done)
    }

    /// Frames waiting on the pair link.
    func drain() { link.drain { receive($0, from: $1) } }

    // MARK: - Incoming frames

    func receive(_ message: LinkMessage, from: SocketAddress) {
        switch message {
        case .pair(let pm):
            if let witness, from == witness {
                lastWitnessFrame = now
                engine.pairReceive(from: .witness, pm)
            } else if let peer, from == peer, let node {
                if case .append(let e, _, _, _, _) = pm, e < node.promisedEpoch { link.count(.staleEpoch) }
                engine.pairReceive(from: .node(1 - node.index), pm)
            } else {
                logger.debug(
                    "pair frame from an address that is not the peer or the witness", metadata: ["from": "\(from)"])
            }
        case .probe(let nonce):
            send(.probeReply(nonce: nonce, info: info), to: from)
        case .probeReply, .pairReply, .unpairReply:
            break  // answers: PairLink hands them to their requests
        case .pairRequest(let nonce, let primaryId, let baseSeq, let baseEpoch, let baseState, let partition):
            let refusal =
                partition == settings.partition.description
                ? acceptPair(
                    from: from, primaryId: primaryId, baseSeq: baseSeq, baseEpoch: baseEpoch, baseState: baseState)
                : TandemError(
                    .pairState,
                    "the nodes handle partitions differently: the primary '\(partition)', the backup "
                        + "'\(settings.partition.description)' (set Witness=, PartitionPolicy= and "
                        + "SplitPrimaryPercent= alike on both)"
                )
            send(
                .pairReply(
                    nonce: nonce, serverId: engine.state.serverId, refusal: refusal?.code,
                    reason: refusal?.message ?? ""), to: from)
        case .unpair(let nonce):
            guard let peer, from == peer else { return }
            if engine.state.licenses.isEmpty {
                dissolve(reason: "the peer dissolved the pair")
                send(.unpairReply(nonce: nonce), to: from)
            }
        }
    }

    var info: PeerInfo {
        var i = PeerInfo(
            serverId: engine.state.serverId, role: role.rawValue, preparedFor: preparedFor?.description,
            serverIdUsed: engine.state.serverIdUsed, licensesActive: !engine.state.licenses.isEmpty)
        i.apiPort = apiPort
        i.partition = settings.partition.description
        i.pairStatus = pairStatus.rawValue
        i.serving = serving
        i.epoch = engine.state.epoch
        i.policyDigest = engine.settings.policy.digest
        return i
    }

    /// Called from the loop's timer.
    func tick() {
        let t = now
        link.expireRequests()
        engine.tick()
        // The serving node hears the witness on every renewal; the standby asks it now and then,
        // so that both report the witness's status.
        if let witness, !(node?.isLeading ?? false), role != .standalone,
            lastWitnessProbe.map({ t >= $0 + settings.heartbeatUSec }) ?? true
        {
            lastWitnessProbe = t
            ask({ .probe(nonce: $0) }, to: witness) { [self] answer in
                if answer != nil { lastWitnessFrame = now }
            }
        }
        if let peer, lastPeerProbe.map({ t >= $0 + settings.heartbeatUSec }) ?? true {
            lastPeerProbe = t
            ask({ .probe(nonce: $0) }, to: peer) { [self] answer in
                if case .probeReply(_, let i)? = answer {
                    peerInfo = i
                    peerInfoAt = now
                }
                // A peer that does not answer holds no administrative change up.
                engine.pair?.notePeerPolicy(answer == nil ? nil : peerInfo?.policyDigest)
            }
        }
        publishStatus()
    }

    /// tandemd is stopping: the node stops serving and tells the peer (and gives the witness
    /// its lease back), so that the peer shows it stopped, or gone for good, and a standby
    /// takes over at once. The frames go with the commit that follows.
    func leave() {
        guard let node, !node.hasLeft else { return }
        engine.pairLeave(forGood: leavingForGood)
        logger.notice(
            leavingForGood ? "told the peer this server leaves the pair for good" : "told the peer this server stops",
            metadata: ["role": "\(role)", "epoch": "\(engine.state.epoch)"])
    }

    // MARK: - Status

    /// The peer's network API address, as clients should use it.
    var peerAPIAddress: String? {
        guard let peer, let port = peerInfo?.apiPort, port > 0 else { return nil }
        let host = peer.description
        guard let colon = host.lastIndex(of: ":") else { return nil }
        return String(host[..<colon]) + ":\(port)"
    }

    var pairStatus: PairStatus { node.map { $0.pairStatus(now: now) } ?? .unpaired }
    var peerStatusValue: PeerStatus? { node?.peerStatus(now: now) }
    var serving: Bool { node.map { $0.isServing(now: now) } ?? true }

    var report: PairReport {
        let node = self.node
        let witnessStatus: String
        if config.witness == nil {
            witnessStatus = ""
        } else if let t = lastWitnessFrame {
            witnessStatus = now < t + settings.failoverTimeoutUSec ? "running" : "disconnected"
        } else {
            witnessStatus = "not-available"
        }
        return PairReport(
            serving: serving, peerAddress: peerAddressText, peerServerId: engine.pair?.peerServerId ?? "",
            peerStatus: node?.peerStatus(now: now) ?? .notAvailable,
            replicatedSeq: node.map { $0.isLeading ? $0.peerMatch : $0.lastSeq } ?? 0,
            witnessAddress: config.witness ?? "", witnessStatus: witnessStatus,
            rejectedFrames: FrameRejection.allCases.map { ($0.rawValue, link.rejected[$0] ?? 0) },
            partitionPolicy: settings.partition.description,
            replicationLag: node.map { $0.isLeading ? $0.lastSeq - min($0.peerMatch, $0.lastSeq) : 0 } ?? 0,
            policyMismatch: node?.policyMismatch ?? false)
    }

    /// The peer as it last described itself, and how this node sees it.
    func peerStatus() -> [(PeerStatusField, BusValue)] {
        guard role != .standalone else { return [] }
        var out: [(PeerStatusField, BusValue)] = [
            (.address, .string(peerAddressText)),
            (.status, .string((node?.peerStatus(now: now) ?? .notAvailable).rawValue)),
            (.serverId, .string(engine.pair?.peerServerId ?? ""))
        ]
        if let reason = node?.peerStatusReason(now: now) { out.append((.statusReason, .string(reason))) }
        if let i = peerInfo, let at = peerInfoAt {
            out += [
                (.role, .string(i.role)), (.pairStatus, .string(i.pairStatus ?? "")),
                (.serving, .bool(i.serving ?? false)),
                (.epoch, .uint64(i.epoch ?? 0)), (.reportedUSec, .uint64(at))
            ]
            if let api = peerAPIAddress { out.append((.networkAddress, .string(api))) }
        }
        return out
    }

    /// Announces the pair's status properties that changed (and STATUS=), and logs a move of
    /// the pair status or of serving.
    func publishStatus() {
        let now = (pairStatus, serving)
        if let last = lastLogged, last != now {
            logger.notice(
                "pair status",
                metadata: [
                    "pair_status": "\(pairStatus)", "serving": "\(serving)",
                    "epoch": "\(engine.state.epoch)", "role": "\(role)"
                ])
        }
        lastLogged = now
        onStatusChange?()
    }
}
