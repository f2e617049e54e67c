import Foundation
import Logging
import TandemCore
import TandemLicensing
import TandemStore

/// Settings the engine needs; reloadable.
public struct EngineSettings: Sendable {
    public var defaultLeaseUSec: USec
    public var maxLeaseUSec: USec
    public var trustedKeys: TrustedKeys
    public init(defaultLeaseUSec: USec = 300 * usecPerSecond, maxLeaseUSec: USec = 86_400 * usecPerSecond,
                trustedKeys: TrustedKeys = TrustedKeys()) {
        self.defaultLeaseUSec = defaultLeaseUSec
        self.maxLeaseUSec = maxLeaseUSec
        self.trustedKeys = trustedKeys
    }
    public static let minLeaseUSec: USec = usecPerSecond
}

/// Fresh identifiers.
public enum Identifiers {
    static func hex(_ bytes: Int) -> String {
        var g = SystemRandomNumberGenerator()
        let digits = Array("0123456789abcdef".utf8)
        var out: [UInt8] = []
        out.reserveCapacity(bytes * 2)
        for _ in 0..<bytes {
            let b = UInt8.random(in: 0...255, using: &g)
            out.append(digits[Int(b >> 4)])
            out.append(digits[Int(b & 15)])
        }
        return String(decoding: out, as: UTF8.self)
    }
    public static func lease() -> String { "lease-" + hex(8) }
    public static func reservation() -> String { "res-" + hex(6) }
    /// A License Server ID such as `TS-7Q2M-K4XW-9D1C-B3RT` (Crockford base32, 80 bits).
    public static func serverId() -> String {
        let alphabet = Array("0123456789ABCDEFGHJKMNPQRSTVWXYZ")
        var g = SystemRandomNumberGenerator()
        let chars = (0..<16).map { _ in alphabet[Int.random(in: 0..<32, using: &g)] }
        return "TS-" + stride(from: 0, to: 16, by: 4).map { String(chars[$0..<$0 + 4]) }.joined(separator: "-")
    }
}

/// The one owner of the license state. It decides commands against the state in memory,
/// stages their changes, and commits every staged change of a batch in one durable
/// transaction (group commit); the callers' answers are released only after that commit.
/// It is driven from a single thread (the daemon's event loop) and is not thread-safe.
public final class Engine {
    public private(set) var state: LicenseState
    public let store: Store
    public var settings: EngineSettings
    let logger: Logger
    let clock: () -> USec

    /// Changes decided and applied in memory, and the answers waiting for them to be durable.
    private var staged: [Change] = []
    private var waiters: [() -> Void] = []
    private var deniedDirty = false
    public private(set) var commitCount = 0
    public private(set) var committedChanges = 0

    /// Called after every commit with the entries written (signals, status, replication).
    public var onCommit: (([LoggedChange]) -> Void)?
    /// Called whenever something was staged or an answer waits for the next commit.
    public var onWork: (() -> Void)?

    public init(store: Store, settings: EngineSettings, logger: Logger, clock: @escaping () -> USec = Engine.realtimeNow) throws {
        self.store = store
        self.settings = settings
        self.logger = logger
        self.clock = clock
        state = try store.load()
        if state.serverId.isEmpty {
            let id = Identifiers.serverId()
            try store.commit([.serverIdSet(id: id)], epoch: state.epoch, now: clock())
            state.apply(.serverIdSet(id: id))
            logger.notice("generated License Server ID", metadata: ["server_id": "\(id)"])
        }
    }

    public static func realtimeNow() -> USec {
        var ts = timespec()
        clock_gettime(CLOCK_REALTIME, &ts)
        return USec(ts.tv_sec) * usecPerSecond + USec(ts.tv_nsec / 1000)
    }

    public var now: USec { clock() }
    public var hasStaged: Bool { !staged.isEmpty || !waiters.isEmpty }
    public var stagedCount: Int { staged.count }

    /// Decides and stages `command`. On success the outcome is final once its batch is committed.
    public func submit(_ command: Command, caller: Caller) -> Result<Outcome, TandemError> {
        let now = clock()
        expireDue(now: now)
        let result = state.decide(command, caller: caller, now: now)
        switch result {
        case .success(let d):
            stage(d.changes)
            return .success(d.outcome)
        case .failure(let e):
            if e.code == .insufficientSeats, case .acquire(let req) = command {
                state.denied[req.feature, default: 0] += 1
                deniedDirty = true
            }
            return .failure(e)
        }
    }

    private func stage(_ changes: [Change]) {
        guard !changes.isEmpty else { return }
        for c in changes { state.apply(c) }
        staged.append(contentsOf: changes)
        onWork?()
    }

    /// Stages the expiry of every lease whose time has come.
    @discardableResult
    public func expireDue(now: USec? = nil) -> [Lease] {
        let t = now ?? clock()
        guard let next = state.nextExpiry, next <= t else { return [] }
        guard case .success(let d) = state.decide(.expireLeases, caller: .root, now: t),
              case .expired(let gone) = d.outcome else { return [] }
        stage(d.changes)
        state.settleExpiryBound()
        for l in gone {
            logger.info("lease expired", metadata: ["lease_id": "\(l.id)", "feature": "\(l.feature)", "client": "\(l.client)"])
        }
        return gone
    }

    /// Runs `body` once everything decided so far is durable (immediately if nothing is staged).
    public func whenCommitted(_ body: @escaping () -> Void) {
        if staged.isEmpty { body() } else { waiters.append(body) }
    }

    /// Commits the staged batch in one transaction, then releases the waiting answers.
    /// A failure leaves the state in memory ahead of the disk: the caller must stop.
    public func flush() throws {
        let batch = staged
        let waiting = waiters
        if !batch.isEmpty || deniedDirty {
            let logged = try store.commit(batch, epoch: state.epoch, now: clock(), denied: deniedDirty ? state.denied : nil)
            commitCount += 1
            committedChanges += logged.count
            staged = []
            deniedDirty = false
            waiters = []
            for f in waiting { f() }
            if !logged.isEmpty { onCommit?(logged) }
        } else {
            waiters = []
            for f in waiting { f() }
        }
    }

    // MARK: - Conveniences that build commands from adapter input

    /// Verifies a license document and activates it.
    public func activate(document: String, caller: Caller) -> Result<Outcome, TandemError> {
        guard caller.isAdmin else { return .failure(TandemError(.accessDenied, "ActivateLicense needs root or membership in the admin group")) }
        do throws(TandemError) {
            let doc = try settings.trustedKeys.verify(document)
            return submit(.activate(doc.license()), caller: caller)
        } catch {
            return .failure(error)
        }
    }

    public func acquire(feature: String, count: UInt32, client: String, ttlUSec: USec?, requestId: String?,
                        caller: Caller) -> Result<Outcome, TandemError> {
        let ttl = ttlUSec ?? settings.defaultLeaseUSec
        guard ttl >= EngineSettings.minLeaseUSec && ttl <= settings.maxLeaseUSec else {
            return .failure(TandemError(.invalidArgs, "ttl must be from 1 s to \(settings.maxLeaseUSec / usecPerSecond) s (MaxLeaseSec)"))
        }
        return submit(.acquire(AcquireRequest(feature: feature, count: count, client: client, ttlUSec: ttl,
                                              requestId: requestId, newLeaseId: Identifiers.lease())), caller: caller)
    }

    public func reserve(feature: String, count: UInt32, holder: String, caller: Caller) -> Result<Outcome, TandemError> {
        submit(.reserve(feature: feature, count: count, holder: holder, newId: Identifiers.reservation()), caller: caller)
    }

    public func resetServerId(caller: Caller) -> Result<Outcome, TandemError> {
        submit(.resetServerId(newId: Identifiers.serverId()), caller: caller)
    }

    /// The text an administrator sends to the vendor to get licenses issued.
    public var activationRequest: String {
        "Tandem-Activation-Request: 1\nServer-Id: \(state.serverId)\n"
    }

    /// Writes the refused-acquisition counters if they changed (on shutdown).
    public func persistCounters() throws {
        if deniedDirty {
            try store.commit([], epoch: state.epoch, now: clock(), denied: state.denied)
            deniedDirty = false
        }
    }
}
