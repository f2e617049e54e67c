import Foundation
import Logging
import TandemCore
import TandemEngine
import TandemPair
import TandemStore

/// A simulated node that is a whole `Engine` over a real SQLite store (in memory-backed
/// storage), as tandemd runs it: commands become tickets, frames leave through the engine's
/// commit, a crash loses what was not committed, and a restart restores the pair from the store.
final class EngineNode {
    let index: Int
    let path: String
    let settings: PairSettings
    let clock: () -> USec
    private(set) var engine: Engine?
    /// The node as it was when it crashed (read by the invariants while it is down).
    private var lastNode: PairNode
    /// Frames and answers the engine released, for the simulation to deliver.
    var effects: [NodeEffect] = []

    static let logger = Logger(label: "sim") { _ in SwiftLogNoOpLogHandler() }

    init(
        index: Int, dir: String, initial: LicenseState, base: UInt64, baseEpoch: UInt64, settings: PairSettings,
        clock: @escaping () -> USec
    ) throws {
        self.index = index
        path = dir + "/node\(index).db"
        self.settings = settings
        self.clock = clock
        lastNode = PairNode(index: index, initial: initial, settings: settings, now: 0)
        do {
            // The pair as PairHost forms it: the server's own ID first, then the record and base.
            let store = try Store(path: path, logger: Self.logger)
            try store.commit([.serverIdSet(id: "TS-SIM-\(index)")], epoch: 0, now: 0)
            try store.formPair(
                PairRecord(
                    node: index, peerAddress: "node\(1 - index)", peerServerId: "TS-SIM-\(1 - index)",
                    progress: PairProgress(promisedEpoch: baseEpoch)),
                base: LogBase(seq: base, epoch: baseEpoch, state: initial), now: 0)
        }
        try open()
    }

    var node: PairNode { engine?.pair?.node ?? lastNode }

    /// Starts (or restarts) the engine from the store.
    func open() throws {
        let e = try Engine(
            store: Store(path: path, logger: Self.logger), settings: EngineSettings(), logger: Self.logger,
            clock: clock)
        guard try e.restorePair(settings: settings) != nil else {
            throw EngineNodeError("node \(index): no pair in the store")
        }
        // The server's own identity lives beside the pair's base: a restart keeps it.
        guard e.state.serverId == "TS-SIM-\(index)" else {
            throw EngineNodeError("node \(index): restarted with the License Server ID '\(e.state.serverId)'")
        }
        e.onSend = { [unowned self] peer, m in effects.append(.send(peer, m)) }
        engine = e
    }

    /// A crash: whatever was not committed is gone, and so are the answers still waiting.
    func crash() {
        lastNode = node
        engine = nil
        effects = []
    }

    /// A client's command, answered (as a `.reply` effect) once the engine answers its ticket.
    func request(ref: Int, _ command: ClientCommand, newLeaseId: String) {
        guard let engine else { return }
        let ticket: Ticket
        switch command {
        case .acquire(let feature, let count, let client, let ttl, let requestId, let wait):
            // As tandemd hands it over: through the queue when it may wait.
            ticket = engine.acquire(
                feature: feature, count: count, client: client, ttlUSec: ttl, requestId: requestId, caller: .root,
                waitUSec: wait, newLeaseId: newLeaseId)
        case .renew(let id): ticket = engine.submit(.renew(leaseId: id), caller: .root)
        case .release(let id): ticket = engine.submit(.release(leaseId: id), caller: .root)
        }
        ticket.whenAnswered { [unowned self] result in
            switch result {
            case .success(let o): effects.append(.reply(ref: ref, .done(o)))
            case .failure(let e) where e.code == .notServing:
                let hint = node.leaderHint
                effects.append(.reply(ref: ref, .notServing(leader: hint == index ? nil : hint)))
            case .failure(let e): effects.append(.reply(ref: ref, .refused(e.code, e.message)))
            }
        }
    }
}

struct EngineNodeError: Error, CustomStringConvertible {
    let description: String
    init(_ d: String) { description = d }
}
