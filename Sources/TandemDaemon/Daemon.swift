import CSystemd
import Foundation
import Logging
import TandemBus
import TandemBusClient
import TandemConfig
import TandemCore
import TandemEngine
import TandemLicensing
import TandemMetrics
import TandemNet
import TandemStore
import TandemSystemd

public enum TandemVersion {
    public static let string = "0.1.0"
}

/// Command-line options of tandemd (see `TandemdCommand`).
public struct DaemonOptions: Sendable {
    public var configPath: String = DaemonConfig.defaultPath
    public var configGiven = false
    public var stateDir: String?
    public var userBus = false
    public init() {}

    /// Where state lives: --state-dir, else $STATE_DIRECTORY (first entry), else /var/lib/tandem.
    public var resolvedStateDir: String { stateDirectory(given: stateDir, fallback: "/var/lib/tandem") }
}

/// tandemd: loads config and state, serves the D-Bus API and the network API on an sd-event
/// loop, talks to systemd (READY/STATUS/WATCHDOG/STOPPING), commits in batches. `init` starts
/// everything in named steps; `run` serves until SIGTERM/SIGINT, then stops as designed: the
/// loop keeps running (pair link, commits, answers) until every call in progress is answered.
public final class Daemon {
    let options: DaemonOptions
    let logger: Logger
    var config: DaemonConfig
    let loop: EventLoop
    let engine: Engine
    /// Signs the certificates of borrows (see `borrowSigner(_:stateDir:)`).
    let borrowSigner: BorrowSigner
    let bus: OpaquePointer
    let server: LicenseManagerServer
    let logControl: LogControlObject
    let mailbox: LoopMailbox
    private(set) var pairHost: PairHost?
    private(set) var network: (api: NetworkAPI, http: HTTPServer)?
    /// The loop's sources (released with the daemon): the signals, the mailbox and the pair link.
    private var sources: [EventSource] = []
    /// Commits run inline on the loop thread, after the iteration's events (priority 100): on two
    /// cores a separate committer thread cost more (wake-ups, context switches) than its overlap
    /// gained (see tandem-bench).
    let flushSource: EventSource
    /// The next lease expiry, while standalone (a pair expires leases in its tick).
    let expiryTimer: EventSource
    /// Seat counters and the status line are announced a little after they changed (`propertiesDelayUSec`).
    let propertiesTimer: EventSource
    /// Bounds how long stopping waits for answers.
    let stopTimer: EventSource
    /// Ends the loop once stopping is done (deferred: never from inside a commit's callbacks).
    let finishSource: EventSource
    /// How long seat-counter PropertiesChanged signals are coalesced.
    static let propertiesDelayUSec: UInt64 = 50_000
    static let pairTickUSec: UInt64 = 50_000
    /// How long calls in progress may take to be answered once stopping began.
    static let stopAnswerUSec: UInt64 = 600_000
    var lastStatus = ""
    var fatal: Error?
    private var stopping: StopProgress?
    /// Seats' events since start, for /metrics.
    private var usageCounters = UsageCounters()

    struct StopProgress {
        var networkStopped = false
        var answersAbandoned = false
    }

    public init(options: DaemonOptions, logger: Logger) throws {
        self.options = options
        self.logger = logger
        // Block the signals we handle before any thread exists, so that every thread inherits
        // the mask and they are only ever delivered through the event loop's signalfd.
        var mask = sigset_t()
        sigemptyset(&mask)
        for sig in [SIGTERM, SIGINT, SIGHUP] { sigaddset(&mask, sig) }
        pthread_sigmask(SIG_BLOCK, &mask, nil)
        // Before any connection: the network API may hold many (the limit is the unit's).
        if let files = FileLimit.raiseToHard() {
            logger.info("open files limit", metadata: ["soft": "\(files.soft)", "hard": "\(files.hard)"])
        }
        do { config = try DaemonConfig.load(path: options.configPath, required: options.configGiven) } catch {
            throw ServiceError("bad configuration: \(error)")
        }
        engine = try Self.openEngine(
            stateDir: options.resolvedStateDir, settings: try Self.loadSettings(config), logger: logger)
        borrowSigner = try Self.borrowSigner(config, stateDir: options.resolvedStateDir)
        do { loop = try EventLoop() } catch { throw ServiceError("\(error)") }
        bus = try Self.connectBus(user: options.userBus)
        do {
            var info = ServerInfo(version: TandemVersion.string, serviceAccount: Self.serviceAccount())
            info.borrowKey = borrowSigner.publicKey.text
            server = try LicenseManagerServer(
                bus: bus, engine: engine, authorizer: Self.authorizer(config, logger), info: info, logger: logger)
            // Administrative calls are put to polkit where it runs (on the system bus; where it is
            // not, the bus says so and the admin group decides).
            server.polkit = PolkitAuthority(bus: bus, logger: logger)
            logControl = try LogControlObject(
                bus: bus, identifier: "tandemd", getLevel: { LogLevelControl.shared.syslogName },
                setLevel: { [logger] name in
                    guard LogLevelControl.shared.set(syslogName: name) else { return false }
                    logger.notice("log level changed", metadata: ["level": "\(name)"])
                    return true
                })
        } catch { throw ServiceError("cannot export D-Bus objects: \(error)") }
        mailbox = try LoopMailbox()
        do {
            flushSource = try loop.deferred(priority: 100)
            expiryTimer = try loop.timer(.realtime)
            propertiesTimer = try loop.timer(.monotonic, accuracyUSec: 0)
            stopTimer = try loop.timer(.monotonic)
            finishSource = try loop.deferred(priority: 200)
        } catch { throw ServiceError("\(error)") }
        try wire()
        try check(sd_bus_attach_event(bus, loop.event, 0), "attach bus")
        // The name last: whoever sees it owned may rely on the pair link and the network API
        // (a loose secret file or a busy port ends the start before anyone could call).
        if config.pair.keyFile != nil { try startPair() }
        try startNetwork()
        auditServiceAccount()
        let rn = sd_bus_request_name(bus, BusNames.service, 0)
        guard rn >= 0 else {
            throw ServiceError("cannot own \(BusNames.service) on the bus: \(String(cString: strerror(-rn)))")
        }
    }

    // MARK: - Start-up steps

    static func loadSettings(_ config: DaemonConfig) throws -> EngineSettings {
        var keys = TrustedKeys()
        if let path = config.vendorKeys {
            do { keys = try TrustedKeys.load(path: path) } catch {
                throw ServiceError("VendorKeys=\(path): \(error)")
            }
        }
        let policy: UsagePolicy
        do {
            // The default file may be missing (no policy); one named by Policy= must exist.
            policy = try PolicyFile.load(path: config.policy, required: config.policy != PolicyFile.defaultPath)
        } catch {
            throw ServiceError("usage policy: \(error)")
        }
        return EngineSettings(
            defaultLeaseUSec: config.defaultLeaseSec * usecPerSecond,
            maxLeaseUSec: config.maxLeaseSec * usecPerSecond, trustedKeys: keys, policy: policy)
    }

    static func openEngine(stateDir: String, settings: EngineSettings, logger: Logger) throws -> Engine {
        do {
            try FileManager.default.createDirectory(
                atPath: stateDir, withIntermediateDirectories: true,
                attributes: [.posixPermissions: 0o700])
        } catch { throw ServiceError("cannot create state directory \(stateDir): \(error.localizedDescription)") }
        let store: Store
        do { store = try Store(path: stateDir + "/tandem.db", logger: logger) } catch {
            throw ServiceError("cannot open state database in \(stateDir): \(error)")
        }
        return try Engine(store: store, settings: settings, logger: logger)
    }

    static func connectBus(user: Bool) throws -> OpaquePointer {
        var bus: OpaquePointer?
        let r = user ? sd_bus_open_user(&bus) : sd_bus_open_system(&bus)
        guard r >= 0, let bus else {
            throw ServiceError(
                "cannot connect to the \(user ? "session" : "system") bus: \(String(cString: strerror(-r)))")
        }
        return bus
    }

    /// A start under another account than the last one (`tandemctl service-account set`) is
    /// an administrative change: audited, with both names.
    func auditServiceAccount() {
        let account = Self.serviceAccount()
        let before = try? engine.store.meta("service_account")
        if let before, before != account {
            engine.audit(
                "ServiceAccountChanged", via: .systemd, caller: Self.signalSender,
                arguments: ["from": before, "to": account], detail: "tandemd runs as \(account), no longer as \(before)"
            )
        }
        if before != account {
            do { try engine.store.setMeta("service_account", account) } catch {
                logger.warning("cannot remember the service account: \(error)")
            }
        }
    }

    static func serviceAccount() -> String {
        guard let pw = getpwuid(geteuid()) else { return String(geteuid()) }
        return String(cString: pw.pointee.pw_name)
    }

    static func authorizer(_ config: DaemonConfig, _ logger: Logger) -> BusAuthorizer {
        let gid = BusAuthorizer.gid(ofGroup: config.adminGroup)
        if gid == nil {
            logger.warning(
                "admin group does not exist; only root may administer", metadata: ["group": "\(config.adminGroup)"])
        }
        return BusAuthorizer(adminGid: gid)
    }

    /// Gives the loop's sources and the engine's callbacks their work (once `self` is complete).
    private func wire() throws {
        do {
            sources += try loop.onSignals([SIGTERM, SIGINT, SIGHUP]) { [unowned self] in onSignal($0) }
            sources.append(try loop.onReadable(mailbox.fd) { [unowned self] in mailbox.drain() })
            try loop.enableWatchdog()
        } catch { throw ServiceError("\(error)") }
        flushSource.onFire = { [unowned self] in flushOrDie() }
        expiryTimer.onFire = { [unowned self] in
            engine.tick()
            flushOrDie()
        }
        propertiesTimer.onFire = { [unowned self] in
            server.emitPendingPropertyChanges()
            updateStatus()
        }
        stopTimer.onFire = { [unowned self] in stopTimeUp() }
        finishSource.onFire = { [unowned self] in finish() }
        engine.onCommit = { [unowned self] logged in
            let featureOfEnded = { [store = engine.store] (id: String) in store.endedLeaseFeatures[id] }
            server.didCommit(logged, featureOfEnded: featureOfEnded)
            usageCounters.count(logged, featureOfEnded: featureOfEnded)
        }
        engine.onWork = { [unowned self] in scheduleFlush() }
        server.onPropertiesPending = { [unowned self] in schedulePropertyChanges() }
        do {
            // The history's window is kept at start and every hour (HistoryDays=).
            let prune = try loop.timer(.monotonic)
            prune.onFire = { [unowned self, unowned prune] in
                pruneHistory()
                prune.schedule(at: loop.now(.monotonic) + Self.historyPruneUSec)
            }
            sources.append(prune)
            prune.schedule(at: loop.now(.monotonic))
        } catch { throw ServiceError("\(error)") }
    }

    /// Deletes the usage history older than `HistoryDays=` (each node keeps its own window).
    func pruneHistory() {
        let window = config.historyDays * 86_400 * usecPerSecond
        let now = engine.now
        do {
            let gone = try engine.store.pruneHistory(before: now > window ? now - window : 0)
            if gone.sessions + gone.denials + gone.buckets > 0 {
                logger.info(
                    "usage history pruned",
                    metadata: [
                        "history_days": "\(config.historyDays)", "sessions": "\(gone.sessions)",
                        "denials": "\(gone.denials)", "buckets": "\(gone.buckets)"
                    ])
            }
        } catch {
            logger.error("cannot prune the usage history", metadata: ["error": "\(error)"])
        }
    }

    static let historyPruneUSec: UInt64 = 3600 * usecPerSecond

    /// Opens the pair link and restores the pair, if one was formed.
    func startPair() throws {
        let host = try PairHost(config: config.pair, engine: engine, logger: logger)
        host.attach()
        host.onStatusChange = { [unowned self] in
            if server.announcePairStatus() { updateStatus() }
        }
        server.pairControl = host
        pairHost = host
        do {
            // Frames first: after the loop was held up (a long commit, a slow machine), the
            // heartbeats and renewals that arrived meanwhile count before the tick judges silence.
            sources.append(try loop.onReadable(host.link.socket.fd, priority: -1) { host.drain() })
            let tick = try loop.timer(.monotonic)
            let every = min(Self.pairTickUSec, config.pair.heartbeatUSec / 2)
            tick.onFire = { [unowned self, unowned tick] in
                host.tick()
                tick.schedule(at: loop.now(.monotonic) + every)
            }
            sources.append(tick)
            tick.schedule(at: loop.now(.monotonic) + every)
        } catch { throw ServiceError("\(error)") }
        logger.notice(
            "pair link open",
            metadata: [
                "listen": "\(host.boundAddress)", "witness": "\(config.pair.witness ?? "none")",
                "role": "\(host.role)"
            ])
    }

    /// The tokens network clients must present (`ClientTokenFile=`; none: no token needed).
    static func clientTokens(_ config: DaemonConfig) throws -> [ClientToken] {
        guard let path = config.clientTokenFile else { return [] }
        try SecretFile.check(path, setting: "ClientTokenFile")
        do { return try ClientToken.read(path: path) } catch { throw ServiceError("ClientTokenFile=\(error)") }
    }

    /// Starts the network API on the `Listen=` addresses (none: no network API).
    func startNetwork() throws {
        let addresses = try config.listen.map { raw -> ListenAddress in
            guard let a = ListenAddress(parsing: raw) else { throw ServiceError("bad Listen= address '\(raw)'") }
            return a
        }
        guard !addresses.isEmpty else { return }
        let tokens = try Self.clientTokens(config)
        let api = NetworkAPI(
            backend: EngineBackend(mailbox: mailbox, daemon: self), tokens: tokens,
            requestTimeoutSec: Double(config.requestTimeoutSec))
        var netLogger = logger
        netLogger.logLevel = max(logger.logLevel, .notice)
        let tls = config.tlsCertificate.flatMap { cert in config.tlsKey.map { TLSFiles(certificate: cert, key: $0) } }
        if let key = tls?.key { try SecretFile.check(key, setting: "TLSKey") }
        let http: HTTPServer
        do {
            http = try HTTPServer(
                api: api, addresses: addresses, tls: tls, limits: config.connectionLimits, logger: netLogger)
            try http.start()
        } catch { throw ServiceError("network API: \(error)") }
        network = (api, http)
        server.info.listenAddresses = http.boundAddresses
        server.info.networkConnections = { [http] in
            [("open", UInt64(http.openConnections)), ("refused", http.refusedConnections)]
        }
        if let port = http.firstPort { pairHost?.apiPort = port }
        logger.notice(
            "network API listening",
            metadata: [
                "addresses": "\(http.boundAddresses.joined(separator: " "))",
                "tokens": "\(tokens.isEmpty ? "none" : "required")",
                "scheme": "\(http.scheme)"
            ])
    }

    // MARK: - Running

    /// Serves until SIGTERM/SIGINT, then closes the database. Returns the exit status.
    public func run() throws -> Int32 {
        // Leases that expired while we were down go now, with their signals.
        engine.tick()
        flushOrDie()
        if let fatal { throw fatal }
        updateStatus(force: true, ready: true)
        logger.notice(
            "tandemd started",
            metadata: [
                "server_id": "\(engine.state.serverId)", "state": "\(options.resolvedStateDir)",
                "bus": "\(options.userBus ? "session" : "system")", "version": "\(TandemVersion.string)"
            ])
        let status: Int32
        do { status = try loop.run() } catch { throw ServiceError("\(error)") }
        // After a fatal error the network API may still hold calls: they end with the process.
        if stopping == nil { network?.http.cancel() }
        if let fatal { throw fatal }
        try? engine.persistCounters()
        // Calls that reached the socket while the last iteration ran are refused, not dropped
        // (a bounded number: a caller that keeps calling must not hold the exit up).
        var drained = 0
        while drained < 1000, sd_bus_process(bus, nil) > 0 { drained += 1 }
        sd_bus_flush(bus)
        sd_bus_release_name(bus, BusNames.service)
        sd_bus_flush_close_unref(bus)
        engine.store.db.close()
        logger.notice(
            "tandemd stopped", metadata: ["commits": "\(engine.commitCount)", "changes": "\(engine.committedChanges)"])
        return status
    }

    func scheduleFlush() {
        if engine.batchFull { flushOrDie() } else { flushSource.trigger() }
    }

    func schedulePropertyChanges() {
        guard propertiesTimer.isOff else { return }
        propertiesTimer.schedule(at: loop.now(.monotonic) + Self.propertiesDelayUSec)
    }

    /// Commits what is staged. A failure after which state in memory may be ahead of the disk
    /// stops the daemon at once, so that nothing unacknowledged is ever answered; systemd
    /// restarts it from the disk.
    func flushOrDie() {
        // After a failed commit the state in memory is ahead of the disk: nothing more is written.
        guard fatal == nil else { return }
        let commits = engine.commitCount, changes = engine.committedChanges, started = ContinuousClock.now
        defer {
            if engine.commitCount > commits {
                Instruments.shared.commit(
                    duration: ContinuousClock.now - started, changes: engine.committedChanges - changes)
            }
        }
        do { try engine.flush() } catch {
            logger.critical("fatal: cannot commit to the state database: \(error)")
            fatal = ServiceError("cannot commit to the state database: \(error)")
            loop.exit(1)
            return
        }
        armExpiry()
        // The status line follows the seat counters as their signals do, coalesced: a commit
        // each would send PID 1 a notification per commit.
        if engine.commitCount > commits { schedulePropertyChanges() }
    }

    func armExpiry() {
        // Lease expiry, and the end of a wait for a seat.
        if let next = [engine.nextExpiry, engine.nextWaitDeadline].compactMap({ $0 }).min() {
            expiryTimer.schedule(at: next)
        } else {
            expiryTimer.enable(false)
        }
    }

    /// The server as `GET /metrics` shows it: taken in one piece on the loop.
    var metrics: ServerMetrics {
        let state = engine.state, now = engine.now
        let pair = pairHost.flatMap { $0.role == .standalone ? nil : $0 }
        var m = ServerMetrics(
            version: server.info.version, serverId: state.serverId, role: (pair?.role ?? .standalone).rawValue,
            pairStatus: (pair?.pairStatus ?? .unpaired).rawValue, serving: pair?.serving ?? true, epoch: state.epoch)
        m.features = state.usage(at: now, policy: engine.settings.policy)
        m.counters = usageCounters
        m.licenses = state.licenses.values.sorted { $0.id < $1.id }
        for w in engine.waiting { m.waiting[w.request.feature, default: 0] += 1 }
        for f in m.features where state.borrowed(f.feature) > 0 { m.borrowed[f.feature] = state.borrowed(f.feature) }
        if let pair {
            let report = pair.report
            m.peerStatus = report.peerStatus.rawValue
            m.witnessStatus = report.witnessStatus.isEmpty ? nil : report.witnessStatus
            m.rejectedFrames = report.rejectedFrames
            if let node = pair.node, node.isLeading { m.replicationLagEntries = report.replicationLag }
            m.policyMismatch = report.policyMismatch
        }
        if let http = network?.http {
            m.connectionsOpen = UInt64(http.openConnections)
            m.connectionsRefused = http.refusedConnections
        }
        return m
    }

    public var statusLine: String {
        if stopping != nil { return "Stopping" }
        let s = engine.state
        var line =
            "\(s.licenses.count) license\(s.licenses.count == 1 ? "" : "s"), "
            + "\(s.totalInUse)/\(s.totalSeats(at: engine.now)) seats in use"
        if let p = pairHost, p.role != .standalone {
            line += ", \(p.role) \(p.serving ? "serving" : "standby"), \(p.pairStatus)"
            if let peer = p.peerStatusValue, peer != .running {
                line += " (\(p.role == .primary ? "backup" : "primary") \(peer))"
            }
            line += ", epoch \(s.epoch)"
            if p.report.policyMismatch { line += ", usage policy differs from the peer's" }
        } else {
            line += ", unpaired"
        }
        return line
    }

    func updateStatus(force: Bool = false, ready: Bool = false) {
        let line = statusLine
        guard force || line != lastStatus else { return }
        lastStatus = line
        if ready { ServiceNotify.ready(status: line) } else { ServiceNotify.status(line) }
    }

    func onSignal(_ sig: Int32) {
        if sig == SIGHUP {
            // Stopping: no reload (it would report READY=1 after STOPPING=1).
            if stopping == nil { reload() }
            return
        }
        beginStopping(sig == SIGTERM ? "SIGTERM" : "SIGINT")
    }

    // MARK: - Stopping

    /// Stops taking new calls and lets the ones in progress be answered: the network API stops
    /// accepting, new commands are refused with NotServing, and the loop runs on (the pair link,
    /// commits, answers) until every call is answered, at most `stopAnswerUSec`.
    func beginStopping(_ why: String) {
        guard stopping == nil else { return }
        stopping = StopProgress()
        logger.notice("stopping on signal", metadata: ["signal": "\(why)"])
        ServiceNotify.stopping(status: "Stopping")
        lastStatus = "Stopping"
        let refusal = TandemError(.notServing, "tandemd is stopping")
        engine.refuseNew(refusal)
        server.refusal = refusal
        flushOrDie()
        if let http = network?.http {
            // The server's thread only posts to the loop; the daemon is touched there.
            let me = UncheckedBox(self)
            http.stop { [mailbox] in mailbox.post { me.value.networkStopped() } }
        } else {
            stopping?.networkStopped = true
        }
        engine.whenSettled { [unowned self] in finishStoppingIfDone() }
        stopTimer.schedule(at: loop.now(.monotonic) + Self.stopAnswerUSec)
    }

    private func networkStopped() {
        stopping?.networkStopped = true
        finishStoppingIfDone()
    }

    /// Calls still unanswered (waiting for the pair) are refused; the network API gets a little
    /// longer to send those refusals, then its connections are closed.
    private func stopTimeUp() {
        guard var progress = stopping else { return }
        if !progress.answersAbandoned {
            progress.answersAbandoned = true
            stopping = progress
            let left = engine.abandonUnanswered(
                TandemError(.notServing, "tandemd stopped before the change was acknowledged"))
            if left > 0 {
                logger.warning(
                    "stopping: calls refused that the pair had not acknowledged", metadata: ["calls": "\(left)"])
            }
            flushOrDie()
            stopTimer.schedule(at: loop.now(.monotonic) + Self.stopAnswerUSec / 2)
            finishStoppingIfDone()
        } else {
            logger.warning("stopping: network API connections still open, closing them")
            network?.http.cancel()
            finish()
        }
    }

    private func finishStoppingIfDone() {
        guard let progress = stopping, progress.networkStopped, engine.isSettled else { return }
        finishSource.trigger()
    }

    private func finish() {
        guard fatal == nil else { return }
        pairHost?.leave()
        flushOrDie()
        server.emitPendingPropertyChanges()
        loop.exit(0)
    }

    /// Who a signal comes from, for the audit trail: someone allowed to send it (root or the
    /// service manager), not known by uid.
    static let signalSender = Caller(uid: nil, isAdmin: true)

    func reload() {
        ServiceNotify.reloading(status: "Reloading configuration")
        do {
            let c = try DaemonConfig.load(path: options.configPath, required: options.configGiven)
            let settings = try Self.loadSettings(c)
            // The token file is the one secret re-read on reload, and only with the network API up.
            let tokens = network == nil ? [] : try Self.clientTokens(c)
            if c.listen != config.listen || c.tlsCertificate != config.tlsCertificate || c.tlsKey != config.tlsKey
                || c.connectionLimits != config.connectionLimits || c.requestTimeoutSec != config.requestTimeoutSec
            {
                logger.warning(
                    "Listen=, TLS, connection limit and timeout changes take effect when tandemd restarts")
            }
            config = c
            engine.settings = settings
            server.announcePairStatus()
            server.authorizer = Self.authorizer(c, logger)
            network?.api.setTokens(tokens)
            // Token names, not tokens: which products may hold seats changed.
            engine.audit(
                "Reload", via: .signal, caller: Self.signalSender,
                arguments: [
                    "vendor_keys": "\(settings.trustedKeys.keys.count)",
                    "policy": settings.policy.isOpen ? "none" : String(settings.policy.digest.prefix(12)),
                    "client_tokens": tokens.map(\.name).joined(separator: ",")
                ],
                detail: "configuration reloaded")
        } catch {
            engine.audit(
                "Reload", via: .signal, caller: Self.signalSender,
                error: TandemError(.failed, "configuration not reloaded, keeping the previous one: \(error)"))
        }
        updateStatus(force: true, ready: true)
    }
}

@inline(__always) func check(_ r: Int32, _ what: String) throws {
    if r < 0 { throw ServiceError("\(what): \(String(cString: strerror(-r)))") }
}
