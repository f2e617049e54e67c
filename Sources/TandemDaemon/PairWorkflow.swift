import Foundation
import TandemConfig
import TandemCore
import TandemSystemd
import TandemPair
import TandemPeer
import TandemStore

/// The pairing workflow of the tech note: PrepareBackup on the backup, EnableBackup on the
/// primary (which sends the pair request the backup accepts), Sync, DisableBackup.
extension PairHost {
    /// Where a server that is not paired yet is to pair with: refused when it is paired or has
    /// licenses activated (`licensesActive` says why that matters here).
    func unpairedTarget(_ text: String, licensesActive: String) -> Result<SocketAddress, TandemError> {
        guard role == .standalone else {
            return .failure(TandemError(.pairState, "this server is already the \(role) of a pair"))
        }
        guard engine.state.licenses.isEmpty else { return .failure(TandemError(.licensesActive, licensesActive)) }
        do { return .success(try SocketAddress(resolving: text, defaultPort: PairConfig.defaultPort)) } catch {
            return .failure(TandemError(.invalidArgs, "\(error)"))
        }
    }

    func noAnswer(from address: SocketAddress) -> TandemError {
        TandemError(
            .peerUnreachable,
            "no answer from \(address) on the pair link (is tandemd running there with the same KeyFile=?)")
    }

    func prepareBackup(primary: String, done: @escaping (TandemError?) -> Void) {
        let address: SocketAddress
        switch unpairedTarget(
            primary, licensesActive: "a backup must not have activated licenses; deactivate them first")
        {
        case .success(let a): address = a
        case .failure(let e): return done(e)
        }
        ask({ .probe(nonce: $0) }, to: address) { [self] answer in
            guard case .probeReply(_, let peerInfo)? = answer else { return done(noAnswer(from: address)) }
            guard peerInfo.role != "witness" else {
                return done(TandemError(.invalidArgs, "\(address) is a witness, not a license server"))
            }
            do { try engine.store.setPreparedPrimary(address.description) } catch {
                return done(TandemError(.failed, "cannot store the prepared primary: \(error)"))
            }
            preparedFor = address
            logger.notice(
                "prepared as backup", metadata: ["primary": "\(address)", "primary_server_id": "\(peerInfo.serverId)"])
            done(nil)
        }
    }

    func enableBackup(backup: String, done: @escaping (TandemError?) -> Void) {
        let address: SocketAddress
        switch unpairedTarget(
            backup,
            licensesActive:
                "licenses are activated on this server; deactivate them, pair, then activate licenses issued "
                + "to both servers"
        ) {
        case .success(let a): address = a
        case .failure(let e): return done(e)
        }
        // The base is what is on disk: nothing decided may be left uncommitted beside it.
        do { try engine.flush() } catch { return done(TandemError(.failed, "cannot commit before pairing: \(error)")) }
        let state = engine.state
        let baseSeq = engine.store.lastSeq
        let baseEpoch = state.epoch
        let baseChanges = state.sharedChanges
        ask(
            { [settings] in
                .pairRequest(
                    nonce: $0, primaryServerId: state.serverId, baseSeq: baseSeq, baseEpoch: baseEpoch,
                    baseState: baseChanges,
                    partition: settings.partition.description)
            },
            to: address
        ) { [self] answer in
            guard case .pairReply(_, let backupId, let refusal, let reason)? = answer else {
                return done(noAnswer(from: address))
            }
            if let refusal { return done(TandemError(refusal, "the backup refused: \(reason)")) }
            guard role == .standalone, engine.state.licenses.isEmpty, engine.store.lastSeq == baseSeq else {
                return done(TandemError(.pairState, "this server changed while pairing; try again"))
            }
            do {
                try form(
                    index: 0, peerAddress: address, peerText: backup, peerId: backupId, base: state, baseSeq: baseSeq,
                    baseEpoch: baseEpoch)
            } catch { return done(TandemError(.failed, "cannot store the pair: \(error)")) }
            done(nil)
        }
    }

    /// On the prepared backup: checks a primary's pair request and forms the pair.
    func acceptPair(
        from: SocketAddress, primaryId: String, baseSeq: UInt64, baseEpoch: UInt64, baseState: [Change]
    ) -> TandemError? {
        if role == .backup, peer == from, engine.pair?.peerServerId == primaryId { return nil }  // a retried request
        guard role == .standalone else {
            return TandemError(.pairState, "\(engine.state.serverId) is already the \(role) of a pair")
        }
        guard let preparedFor, preparedFor == from else {
            return TandemError(
                .peerNotPrepared,
                "\(engine.state.serverId) was not prepared for the primary \(from) (run PrepareBackup on it first)")
        }
        guard engine.state.licenses.isEmpty else {
            return TandemError(.licensesActive, "the backup \(engine.state.serverId) has activated licenses")
        }
        guard !engine.state.serverIdUsed else {
            return TandemError(
                .serverIdUsed,
                "the backup's License Server ID \(engine.state.serverId) had activations; run ResetServerId on it first"
            )
        }
        var base = LicenseState(changes: baseState)
        base.serverId = engine.state.serverId
        do {
            try form(
                index: 1, peerAddress: from, peerText: preparedFor.description, peerId: primaryId, base: base,
                baseSeq: baseSeq, baseEpoch: baseEpoch)
        } catch { return TandemError(.failed, "cannot store the pair: \(error)") }
        return nil
    }

    func form(
        index: NodeIndex, peerAddress: SocketAddress, peerText: String, peerId: String, base: LicenseState,
        baseSeq: UInt64, baseEpoch: UInt64
    ) throws {
        // What the standalone server decided is committed first: the pair starts from the disk.
        try engine.flush()
        guard !engine.hasStaged else { throw ServiceError("changes are still being committed") }
        let r = PairRole(node: index)
        let record = PairRecord(
            node: index, peerAddress: peerText, peerServerId: peerId,
            progress: PairProgress(promisedEpoch: baseEpoch))
        try engine.store.formPair(record, base: LogBase(seq: baseSeq, epoch: baseEpoch, state: base), now: now)
        let node = PairNode(
            index: index, baseState: base, base: baseSeq, baseEpoch: baseEpoch, log: [], promisedEpoch: baseEpoch,
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
        logger.notice(
            "Sync: sending the standby a snapshot of the whole state", metadata: ["seq": "\(node?.lastSeq ?? 0)"])
        done(nil)
    }

    /// The package is being removed (its maintainer script asks before it stops tandemd): when
    /// tandemd stops, the peer is told this server leaves for good, not only that it stopped.
    func prepareRemoval(done: @escaping (TandemError?) -> Void) {
        removalPreparedAt = now
        logger.notice(
            "being uninstalled: the peer will be told, as tandemd stops, that this server leaves for good",
            metadata: ["role": "\(role)"])
        done(nil)
    }

    func disableBackup(done: @escaping (TandemError?) -> Void) {
        guard role != .standalone, let peer else { return done(TandemError(.pairState, "this server is not paired")) }
        guard engine.state.licenses.isEmpty else {
            return done(
                TandemError(.licensesActive, "licenses are activated on the pair; deactivate them before dissolving it")
            )
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
}
