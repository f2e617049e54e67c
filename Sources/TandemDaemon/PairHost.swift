import CSystemd
import Foundation
import Logging
import TandemBus
import TandemBusClient
import TandemCore
import TandemEngine
import TandemPair
import TandemPeer
import TandemStore

/// The daemon's side of the pair: the UDP pair link (authenticated frames), the pairing
/// workflow (PrepareBackup / EnableBackup / DisableBackup), the protocol's clock, and the
/// pair's status. It runs on the event-loop thread; the engine owns the PairNode.
final class PairHost: PairControl {
    let config: PairConfig
    unowned let engine: Engine
    let logger: Logger
    let socket: UDPSocket
    var sealer: FrameSealer
    var opener: FrameOpener
    let witness: SocketAddress?
    var settings: PairSettings
    // Pair membership (durable in the store's meta table).
    var role: PairRole = .standalone
    var peerAddressText = ""
    var peer: SocketAddress?
    var preparedFor: SocketAddress?
    var lastWitnessFrame: USec?
    var rejected: [FrameRejection: UInt64] = [:]
    /// Waiting workflow calls, by nonce.
    var waiting: [UInt64: (deadline: USec, handler: (LinkMessage?) -> Void)] = [:]
    /// Called when a status property changed (names), to emit PropertiesChanged and STATUS=.
    var onStatusChange: (([String]) -> Void)?
    var lastSnapshot: [String: BusValue] = [:]
    /// This node's network API port, told to the peer; and what the peer told us.
    var apiPort = 0
    var peerInfo: PeerInfo?
    var peerInfoAt: USec?
    var lastPeerProbe: USec?
    var lastWitnessProbe: USec?

    static let probeTimeoutUSec: USec = 2_000_000

    init(config: PairConfig, engine: Engine, logger: Logger) throws {
        self.config = config
        self.engine = engine
        self.logger = logger
        guard let keyFile = config.keyFile else { throw StartupError("[Pair] needs KeyFile=") }
        let key: PairKey
        do { key = try PairKey.load(path: keyFile) } catch { throw StartupError("KeyFile=\(keyFile): \(error)") }
        sealer = FrameSealer(key: key)
        opener = FrameOpener(key: key)
        do {
            socket = try UDPSocket(bind: SocketAddress(resolving: config.listen, defaultPort: PairConfig.defaultPort))
            witness = try config.witness.map { try SocketAddress(resolving: $0, defaultPort: PairConfig.witnessPort) }
        } catch { throw StartupError("[Pair]: \(error)") }
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

    var boundAddress: String { socket.local.description }
    /// The pair protocol's node, while paired.
    var node: PairNode? { engine.pair?.node }
    var now: USec { engine.now }

    /// Rebuilds the pair from the store after a restart.
    func restore() throws {
        let store = engine.store
        if let p = try store.preparedPrimary() {
            preparedFor = try? SocketAddress(resolving: p, defaultPort: PairConfig.defaultPort)
        }
        guard let record = try store.pairRecord(), let base = try store.pairBase(serverId: engine.state.serverId) else { return }
        let entries = try store.changes(after: base.seq, limit: Int.max)
        let progress = record.progress
        let node = PairNode(index: record.node, baseState: base.state, base: base.seq, baseEpoch: base.epoch, log: entries,
                            promisedEpoch: progress.promisedEpoch, unmerged: progress.unmerged, splitBasePos: progress.splitBase,
                            settings: settings, now: now)
        do { peer = try SocketAddress(resolving: record.peerAddress, defaultPort: PairConfig.defaultPort) } catch {
            throw StartupError("stored peer address '\(record.peerAddress)': \(error)")
        }
        role = PairRole(node: record.node)
        peerAddressText = record.peerAddress
        engine.startPair(node, peerServerId: record.peerServerId)
        logger.notice("pair restored", metadata: ["role": "\(role)", "peer": "\(record.peerAddress)", "log_entries": "\(entries.count)",
                                                  "epoch": "\(progress.promisedEpoch)", "partition": "\(settings.partition.description)",
                                                  "unmerged": "\(progress.unmerged.count)"])
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
            return (i == 0 ? "the primary" : "the backup") + (isPeer && !peerAddressText.isEmpty ? " at \(peerAddressText)" : "")
        }
    }

    func send(_ message: LinkMessage, to address: SocketAddress) {
        socket.send(sealer.seal(message, now: now), to: address)
    }

    // MARK: - Incoming frames

    func drain() {
        while let (bytes, from) = socket.receive() {
            switch opener.open(bytes, now: now) {
            case .failure(let why):
                rejected[why, default: 0] += 1
                logger.warning("pair frame rejected", metadata: ["from": "\(from)", "reason": "\(why.rawValue)"])
            case .success(let m):
                receive(m, from: from)
            }
        }
    }

    func receive(_ message: LinkMessage, from: SocketAddress) {
        switch message {
        case .pair(let pm):
            if let witness, from == witness {
                lastWitnessFrame = now
                engine.pairReceive(from: .witness, pm)
            } else if let peer, from == peer, let node {
                if case .append(let e, _, _, _, _) = pm, e < node.promisedEpoch { rejected[.staleEpoch, default: 0] += 1 }
                engine.pairReceive(from: .node(1 - node.index), pm)
            } else {
                logger.debug("pair frame from an address that is not the peer or the witness", metadata: ["from": "\(from)"])
            }
        case .probe(let nonce):
            send(.probeReply(nonce: nonce, info: info), to: from)
        case .probeReply(let nonce, _), .pairReply(let nonce, _, _, _), .unpairReply(let nonce):
            if let w = waiting.removeValue(forKey: nonce) { w.handler(message) }
        case .pairRequest(let nonce, let primaryId, let baseSeq, let baseEpoch, let baseState, let partition):
            let refusal = partition == settings.partition.description ? acceptPair(from: from, primaryId: primaryId, baseSeq: baseSeq, baseEpoch: baseEpoch, baseState: baseState)
                : TandemError(.pairState, "the nodes handle partitions differently: the primary '\(partition)', the backup '\(settings.partition.description)' (set Witness=, PartitionPolicy= and SplitPrimaryPercent= alike on both)")
            send(.pairReply(nonce: nonce, serverId: engine.state.serverId, refusal: refusal?.code, reason: refusal?.message ?? ""), to: from)
        case .unpair(let nonce):
            guard let peer, from == peer else { return }
            if engine.state.licenses.isEmpty {
                dissolve(reason: "the peer dissolved the pair")
                send(.unpairReply(nonce: nonce), to: from)
            }
        }
    }

    var info: PeerInfo {
        var i = PeerInfo(serverId: engine.state.serverId, role: role.rawValue, preparedFor: preparedFor?.description,
                         serverIdUsed: engine.state.serverIdUsed, licensesActive: !engine.state.licenses.isEmpty)
        i.apiPort = apiPort
        i.partition = settings.partition.description
        i.pairStatus = pairStatus.rawValue
        i.serving = serving
        i.epoch = engine.state.epoch
        return i
    }

    /// Sends `message` and calls `done` with the answer, or nil after the timeout.
    func ask(_ make: (UInt64) -> LinkMessage, to address: SocketAddress, done: @escaping (LinkMessage?) -> Void) {
        let nonce = UInt64.random(in: 1...UInt64.max)
        waiting[nonce] = (now + Self.probeTimeoutUSec, done)
        send(make(nonce), to: address)
    }

    /// Called from the loop's timer.
    func tick() {
        let t = now
        for (nonce, w) in waiting where t >= w.deadline {
            waiting[nonce] = nil
            w.handler(nil)
        }
        engine.tick()
        // The serving node hears the witness on every renewal; the standby asks it now and then,
        // so that both report the witness's status.
        if let witness, !(node?.isLeading ?? false), role != .standalone,
           lastWitnessProbe.map({ t >= $0 + settings.heartbeatUSec }) ?? true {
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
            }
        }
        publishStatus()
    }

    // MARK: - Workflow

    func resolve(_ text: String) -> Result<SocketAddress, TandemError> {
        do { return .success(try SocketAddress(resolving: text, defaultPort: PairConfig.defaultPort)) } catch {
            return .failure(TandemError(.invalidArgs, "\(error)"))
        }
    }

    func prepareBackup(primary: String, done: @escaping (TandemError?) -> Void) {
        guard role == .standalone else { return done(TandemError(.pairState, "this server is already the \(role) of a pair")) }
        guard engine.state.licenses.isEmpty else {
            return done(TandemError(.licensesActive, "a backup must not have activated licenses; deactivate them first"))
        }
        let address: SocketAddress
        switch resolve(primary) { case .success(let a): address = a; case .failure(let e): return done(e) }
        ask({ .probe(nonce: $0) }, to: address) { [self] answer in
            guard case .probeReply(_, let peerInfo)? = answer else {
                return done(TandemError(.peerUnreachable, "no answer from \(address) on the pair link (is tandemd running there with the same KeyFile=?)"))
            }
            guard peerInfo.role != "witness" else { return done(TandemError(.invalidArgs, "\(address) is a witness, not a license server")) }
            do { try engine.store.setPreparedPrimary(address.description) } catch {
                return done(TandemError(.failed, "cannot store the prepared primary: \(error)"))
            }
            preparedFor = address
            logger.notice("prepared as backup", metadata: ["primary": "\(address)", "primary_server_id": "\(peerInfo.serverId)"])
            done(nil)
        }
    }

    func enableBackup(backup: String, done: @escaping (TandemError?) -> Void) {
        guard role == .standalone else { return done(TandemError(.pairState, "this server is already the \(role) of a pair")) }
        guard engine.state.licenses.isEmpty else {
            return done(TandemError(.licensesActive, "licenses are activated on this server; deactivate them, pair, then activate licenses issued to both servers"))
        }
        let address: SocketAddress
        switch resolve(backup) { case .success(let a): address = a; case .failure(let e): return done(e) }
        let state = engine.state
        let baseSeq = engine.store.lastSeq
        let baseEpoch = state.epoch
        let baseChanges = state.sharedChanges
        ask({ [settings] in .pairRequest(nonce: $0, primaryServerId: state.serverId, baseSeq: baseSeq, baseEpoch: baseEpoch, baseState: baseChanges,
                                         partition: settings.partition.description) },
            to: address) { [self] answer in
            guard case .pairReply(_, let backupId, let refusal, let reason)? = answer else {
                return done(TandemError(.peerUnreachable, "no answer from \(address) on the pair link (is tandemd running there with the same KeyFile=?)"))
            }
            if let refusal { return done(TandemError(refusal, "the backup refused: \(reason)")) }
            guard role == .standalone, engine.state.licenses.isEmpty, engine.store.lastSeq == baseSeq else {
                return done(TandemError(.pairState, "this server changed while pairing; try again"))
            }
            do {
                try form(index: 0, peerAddress: address, peerText: backup, peerId: backupId, base: state, baseSeq: baseSeq, baseEpoch: baseEpoch)
            } catch { return done(TandemError(.failed, "cannot store the pair: \(error)")) }
            done(nil)
        }
    }

    /// On the prepared backup: checks a primary's pair request and forms the pair.
    func acceptPair(from: SocketAddress, primaryId: String, baseSeq: UInt64, baseEpoch: UInt64, baseState: [Change]) -> TandemError? {
        if role == .backup, peer == from, engine.pair?.peerServerId == primaryId { return nil } // a retried request
        guard role == .standalone else { return TandemError(.pairState, "\(engine.state.serverId) is already the \(role) of a pair") }
        guard let preparedFor, preparedFor == from else {
            return TandemError(.peerNotPrepared, "\(engine.state.serverId) was not prepared for the primary \(from) (run PrepareBackup on it first)")
        }
        guard engine.state.licenses.isEmpty else { return TandemError(.licensesActive, "the backup \(engine.state.serverId) has activated licenses") }
        guard !engine.state.serverIdUsed else {
            return TandemError(.serverIdUsed, "the backup's License Server ID \(engine.state.serverId) had activations; run ResetServerId on it first")
        }
        var base = LicenseState(changes: baseState)
        base.serverId = engine.state.serverId
        do {
            try form(index: 1, peerAddress: from, peerText: preparedFor.description, peerId: primaryId, base: base, baseSeq: baseSeq, baseEpoch: baseEpoch)
        } catch { return TandemError(.failed, "cannot store the pair: \(error)") }
        return nil
    }

    func form(index: NodeIndex, peerAddress: SocketAddress, peerText: String, peerId: String, base: LicenseState,
              baseSeq: UInt64, baseEpoch: UInt64) throws {
        let r = PairRole(node: index)
        let record = PairRecord(node: index, peerAddress: peerText, peerServerId: peerId,
                                progress: PairProgress(promisedEpoch: baseEpoch))
        try engine.store.formPair(record, base: LogBase(seq: baseSeq, epoch: baseEpoch, state: base), now: now)
        let node = PairNode(index: index, baseState: base, base: baseSeq, baseEpoch: baseEpoch, log: [], promisedEpoch: baseEpoch,
                            settings: settings, now: now)
        role = r
        peer = peerAddress
        peerAddressText = peerText
        engine.startPair(node, peerServerId: peerId)
        logger.notice("pair formed", metadata: ["role": "\(r)", "peer": "\(peerText)", "peer_server_id": "\(peerId)"])
        publishStatus()
    }

    func sync(done: @escaping (TandemError?) -> Void) {
        if let e = engine.pairSync() { return done(e) }
        logger.notice("Sync: sending the standby a snapshot of the whole state", metadata: ["seq": "\(node?.lastSeq ?? 0)"])
        done(nil)
    }

    func disableBackup(done: @escaping (TandemError?) -> Void) {
        guard role != .standalone, let peer else { return done(TandemError(.pairState, "this server is not paired")) }
        guard engine.state.licenses.isEmpty else {
            return done(TandemError(.licensesActive, "licenses are activated on the pair; deactivate them before dissolving it"))
        }
        ask({ .unpair(nonce: $0) }, to: peer) { [self] answer in
            if answer == nil { logger.warning("the peer did not confirm dissolving the pair; dissolving here anyway") }
            dissolve(reason: "DisableBackup")
            done(nil)
        }
    }

    func dissolve(reason: String) {
        engine.stopPair()
        do {
            try engine.store.dissolvePair()
        } catch { logger.error("cannot clear the pair from the state database: \(error)") }
        logger.notice("pair dissolved", metadata: ["reason": "\(reason)", "was": "\(role)"])
        role = .standalone
        peer = nil
        peerAddressText = ""
        preparedFor = nil
        publishStatus()
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
    var serving: Bool { node.map { $0.isServing(now: now) } ?? true }

    func property(_ name: String) -> BusValue? {
        switch name {
        case "Serving": return .bool(serving)
        case "PeerAddress": return .string(peerAddressText)
        case "PeerServerId": return .string(engine.pair?.peerServerId ?? "")
        case "PeerStatus": return .string(node.map { $0.peerStatus(now: now).rawValue } ?? "not-available")
        case "ReplicatedSeq":
            guard let node else { return .uint64(0) }
            return .uint64(node.isLeading ? node.peerMatch : node.lastSeq)
        case "WitnessAddress": return .string(config.witness ?? "")
        case "PartitionPolicy": return .string(settings.partition.description)
        case "WitnessStatus":
            guard config.witness != nil else { return .string("") }
            guard let t = lastWitnessFrame else { return .string("not-available") }
            return .string(now < t + settings.failoverTimeoutUSec ? "running" : "disconnected")
        case "RejectedFrames":
            return .array(elementSignature: "{st}", FrameRejection.allCases.map { .dictEntry(.string($0.rawValue), .uint64(rejected[$0] ?? 0)) })
        default: return nil
        }
    }

    /// The peer as it last described itself, and how this node sees it.
    func peerStatus() -> [(String, BusValue)] {
        guard role != .standalone else { return [] }
        var out: [(String, BusValue)] = [
            ("Address", .string(peerAddressText)),
            ("Status", property("PeerStatus") ?? .string("not-available")),
            ("ServerId", .string(engine.pair?.peerServerId ?? "")),
        ]
        if let i = peerInfo, let at = peerInfoAt {
            out += [("Role", .string(i.role)), ("PairStatus", .string(i.pairStatus ?? "")), ("Serving", .bool(i.serving ?? false)),
                    ("Epoch", .uint64(i.epoch ?? 0)), ("ReportedUSec", .uint64(at))]
            if let api = peerAPIAddress { out.append(("NetworkAddress", .string(api))) }
        }
        return out
    }

    static let statusProperties = ["Role", "PairStatus", "Serving", "Epoch", "PeerAddress", "PeerServerId", "PeerStatus", "WitnessStatus", "RejectedFrames"]

    /// Compares the status with the last one published and announces what changed.
    func publishStatus() {
        var snap: [String: BusValue] = ["Role": .string(role.rawValue), "PairStatus": .string(pairStatus.rawValue), "Epoch": .uint64(engine.state.epoch)]
        for n in Self.statusProperties where snap[n] == nil { snap[n] = property(n) }
        let changed = Self.statusProperties.filter { snap[$0] != lastSnapshot[$0] }
        guard !changed.isEmpty else { return }
        if lastSnapshot["Serving"] != nil, snap["Serving"] != lastSnapshot["Serving"] || snap["PairStatus"] != lastSnapshot["PairStatus"] {
            logger.notice("pair status", metadata: ["pair_status": "\(pairStatus)", "serving": "\(serving)", "epoch": "\(engine.state.epoch)", "role": "\(role)"])
        }
        lastSnapshot = snap
        onStatusChange?(changed)
    }
}
