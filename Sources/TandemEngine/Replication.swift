import Logging
import TandemCore
import TandemStore

/// Where the engine's decisions become durable and answered. A server is in one role at a time:
/// standalone (`StandaloneReplication`: its own state and log) or paired (`PairReplication`: the
/// pair's replicated log, kept by a `PairNode`). The engine decides nothing itself about which
/// role it is in: it hands every command, tick and commit to its role.
protocol Replication: AnyObject {
    /// The license state commands are decided against.
    var state: LicenseState { get }
    /// Decides `command` at `now`. On success its changes are applied in memory and staged, and
    /// the ticket is answered once they are durable (and, while paired, acknowledged).
    func perform(_ command: Command, caller: Caller, now: USec) -> Ticket
    /// Time-driven work (lease expiry; while paired also heartbeats and elections).
    func tick(now: USec)
    /// Counts a refused acquisition (a local statistic, not replicated).
    func countDenied(_ feature: String)
    /// Changes decided and not yet committed.
    var stagedCount: Int { get }
    /// Whether to commit at once rather than at the end of the loop iteration (a batch is large).
    var batchFull: Bool { get }
    /// Whether `commit` has anything to do (changes, answers or frames waiting for it).
    var hasWork: Bool { get }
    /// Makes everything decided durable in one transaction (with the refusal counters, if given),
    /// then releases what waited for it. Returns the entries written, nil when there was nothing
    /// to write. A failure leaves the state in memory ahead of the disk: the caller must stop.
    func commit(now: USec, denied: [String: UInt64]?) throws -> [LogEntry]?
}

/// A server on its own: commands are decided against its state, their changes committed in
/// batches to its store, and the answers released after each commit (group commit).
final class StandaloneReplication: Replication {
    private(set) var state: LicenseState
    let store: Store
    let logger: Logger
    /// Called when something was staged or an answer waits for the next commit.
    let onWork: () -> Void
    private var staged: [Change] = []
    private var waiting: [Ticket] = []

    init(state: LicenseState, store: Store, logger: Logger, onWork: @escaping () -> Void) {
        self.state = state
        self.store = store
        self.logger = logger
        self.onWork = onWork
    }

    var stagedCount: Int { staged.count }
    var batchFull: Bool { staged.count >= 256 }
    var hasWork: Bool { !staged.isEmpty || !waiting.isEmpty }

    func perform(_ command: Command, caller: Caller, now: USec) -> Ticket {
        tick(now: now)
        switch state.decide(command, caller: caller, now: now) {
        case .failure(let e):
            return Ticket(decision: .failure(e))
        case .success(let d):
            stage(d.changes)
            let ticket = Ticket(decision: .success(d.outcome))
            // An answer without changes of its own may still rest on staged ones (a retried
            // acquisition returns a lease not yet committed): it waits for the same commit.
            if staged.isEmpty { ticket.finish() } else { waiting.append(ticket) }
            return ticket
        }
    }

    /// Stages the expiry of every lease whose time has come.
    func tick(now: USec) {
        guard let next = state.nextExpiry, next <= now else { return }
        guard case .success(let d) = state.decide(.expireLeases, caller: .root, now: now),
            case .expired(let gone) = d.outcome
        else { return }
        stage(d.changes)
        state.settleExpiryBound()
        Self.logExpiries(gone, logger)
    }

    /// A few expiries are a line each; many at once (a site's clients all gone with their network)
    /// are one line with the counts per feature: each is a session's end in the usage history.
    static func logExpiries(_ gone: [Lease], _ logger: Logger) {
        guard gone.count > maxExpiryLines else {
            for l in gone {
                logger.info(
                    "lease expired",
                    metadata: ["lease_id": "\(l.id)", "feature": "\(l.feature)", "client": "\(l.client)"])
            }
            return
        }
        var perFeature: [String: Int] = [:]
        for l in gone { perFeature[l.feature, default: 0] += 1 }
        logger.notice(
            "\(gone.count) leases expired",
            metadata: [
                "expired": "\(gone.count)",
                "features": "\(perFeature.sorted { $0.key < $1.key }.map { "\($0.key)=\($0.value)" }.joined(separator: " "))"
            ])
    }

    /// Expiries at once beyond which the journal gets one summary line.
    static let maxExpiryLines = 10

    var nextExpiry: USec? { state.nextExpiry }

    func countDenied(_ feature: String) { state.denied[feature, default: 0] += 1 }

    private func stage(_ changes: [Change]) {
        guard !changes.isEmpty else { return }
        for c in changes { state.apply(c) }
        staged.append(contentsOf: changes)
        onWork()
    }

    func commit(now: USec, denied: [String: UInt64]?) throws -> [LogEntry]? {
        var logged: [LogEntry]?
        if !staged.isEmpty || denied != nil {
            logged = try store.commit(staged, epoch: state.epoch, now: now, denied: denied, applied: state)
            staged = []
        }
        let answered = waiting
        waiting = []
        for t in answered { t.finish() }
        return logged
    }
}
