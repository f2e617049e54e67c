import CSystemd
import Foundation
import Logging
import TandemBus
import TandemBusClient
import TandemCore
import TandemEngine
import TandemLicensing
import TandemNet
import TandemStore

public enum TandemVersion {
    public static let string = "0.1.0"
}

/// Command-line options of tandemd.
public struct DaemonOptions: Sendable {
    public var configPath: String = DaemonConfig.defaultPath
    public var configGiven = false
    public var stateDir: String?
    public var userBus = false
    public init() {}

    /// Where state lives: --state-dir, else $STATE_DIRECTORY (first entry), else /var/lib/tandem.
    public var resolvedStateDir: String {
        if let stateDir { return stateDir }
        if let env = ProcessInfo.processInfo.environment["STATE_DIRECTORY"], !env.isEmpty {
            return String(env.split(separator: ":").first ?? Substring(env))
        }
        return "/var/lib/tandem"
    }
}

public struct StartupError: Error, CustomStringConvertible {
    public let description: String
    public init(_ d: String) { description = d }
}

/// tandemd: loads config and state, serves the D-Bus API on an sd-event loop, talks to
/// systemd (READY/STATUS/WATCHDOG/STOPPING), commits in batches.
public final class Daemon {
    let options: DaemonOptions
    var logger: Logger
    var config = DaemonConfig()
    var engine: Engine!
    var server: LicenseManagerServer!
    var event: OpaquePointer?
    var bus: OpaquePointer?
    var flushSource: OpaquePointer?
    var expirySource: OpaquePointer?
    var propertiesSource: OpaquePointer?
    /// How long seat-counter PropertiesChanged signals are coalesced.
    static let propertiesDelayUSec: UInt64 = 50_000
    var lastStatus = ""
    var fatal: Error?
    var mailbox: LoopMailbox!
    var mailboxSource: OpaquePointer?
    var httpServer: HTTPServer?
    var networkAPI: NetworkAPI?
    var logControl: LogControlObject?
    var pairHost: PairHost?
    var pairIOSource: OpaquePointer?
    var pairTickSource: OpaquePointer?

    public init(options: DaemonOptions, logger: Logger) {
        self.options = options
        self.logger = logger
    }

    static func loadSettings(_ config: DaemonConfig) throws -> EngineSettings {
        var keys = TrustedKeys()
        if let path = config.vendorKeys {
            do { keys = try TrustedKeys.load(path: path) } catch {
                throw StartupError("VendorKeys=\(path): \(error)")
            }
        }
        return EngineSettings(defaultLeaseUSec: config.defaultLeaseSec * usecPerSecond,
                              maxLeaseUSec: config.maxLeaseSec * usecPerSecond, trustedKeys: keys)
    }

    static func serviceAccount() -> String {
        guard let pw = getpwuid(geteuid()) else { return String(geteuid()) }
        return String(cString: pw.pointee.pw_name)
    }

    func authorizer() -> BusAuthorizer {
        let gid = BusAuthorizer.gid(ofGroup: config.adminGroup)
        if gid == nil {
            logger.warning("admin group does not exist; only root may administer", metadata: ["group": "\(config.adminGroup)"])
        }
        return BusAuthorizer(adminGid: gid)
    }

    /// Runs until SIGTERM/SIGINT. Returns the exit status.
    public func run() throws -> Int32 {
        // Block the signals we handle before any thread exists, so that every thread inherits
        // the mask and they are only ever delivered through the event loop's signalfd.
        var mask = sigset_t()
        sigemptyset(&mask)
        for sig in [SIGTERM, SIGINT, SIGHUP] { sigaddset(&mask, sig) }
        pthread_sigmask(SIG_BLOCK, &mask, nil)
        do {
            config = try DaemonConfig.load(path: options.configPath, required: options.configGiven)
        } catch { throw StartupError("bad configuration: \(error)") }
        let settings = try Self.loadSettings(config)

        let stateDir = options.resolvedStateDir
        do {
            try FileManager.default.createDirectory(atPath: stateDir, withIntermediateDirectories: true,
                                                    attributes: [.posixPermissions: 0o700])
        } catch { throw StartupError("cannot create state directory \(stateDir): \(error.localizedDescription)") }
        let store: Store
        do { store = try Store(path: stateDir + "/tandem.db", logger: logger) } catch {
            throw StartupError("cannot open state database in \(stateDir): \(error)")
        }
        engine = try Engine(store: store, settings: settings, logger: logger)

        try check(sd_event_default(&event), "sd_event_default")
        for sig in [SIGTERM, SIGINT, SIGHUP] {
            try check(sd_event_add_signal(event, nil, sig | SD_EVENT_SIGNAL_PROCMASK, signalHandler, selfPointer), "add signal \(sig)")
        }
        try check(sd_event_set_watchdog(event, 1), "watchdog")

        let r = options.userBus ? sd_bus_open_user(&bus) : sd_bus_open_system(&bus)
        guard r >= 0, let bus else {
            throw StartupError("cannot connect to the \(options.userBus ? "session" : "system") bus: \(String(cString: strerror(-r)))")
        }
        do {
            server = try LicenseManagerServer(bus: bus, engine: engine, authorizer: authorizer(),
                                              info: ServerInfo(version: TandemVersion.string, serviceAccount: Self.serviceAccount()),
                                              logger: logger)
        } catch { throw StartupError("cannot export D-Bus objects: \(error)") }
        do {
            logControl = try LogControlObject(bus: bus, identifier: "tandemd", getLevel: { LogLevelControl.shared.syslogName },
                                              setLevel: { [logger] name in
                                                  guard LogLevelControl.shared.set(syslogName: name) else { return false }
                                                  logger.notice("log level changed", metadata: ["level": "\(name)"])
                                                  return true
                                              })
        } catch { throw StartupError("cannot export LogControl1: \(error)") }
        engine.onCommit = { [unowned self] logged in
            server.didCommit(logged)
        }
        // Commits run inline on the loop thread: on two cores a separate committer thread cost
        // more (wake-ups, context switches) than its overlap gained (see tandem-bench).
        engine.onWork = { [unowned self] in self.scheduleFlush() }
        server.onPropertiesPending = { [unowned self] in self.schedulePropertyChanges() }

        try check(sd_bus_attach_event(bus, event, 0), "attach bus")
        let rn = sd_bus_request_name(bus, BusNames.service, 0)
        guard rn >= 0 else {
            throw StartupError("cannot own \(BusNames.service) on the bus: \(String(cString: strerror(-rn)))")
        }

        try check(sd_event_add_defer(event, &flushSource, flushHandler, selfPointer), "add defer")
        sd_event_source_set_priority(flushSource, 100)
        sd_event_source_set_enabled(flushSource, Int32(SD_EVENT_OFF))
        try check(sd_event_add_time(event, &expirySource, clockid_t(CLOCK_REALTIME), UInt64.max, 1000, expiryHandler, selfPointer), "add timer")
        try check(sd_event_add_time(event, &propertiesSource, clockid_t(CLOCK_MONOTONIC), UInt64.max, 0, propertiesHandler, selfPointer), "add timer")
        sd_event_source_set_enabled(propertiesSource, Int32(SD_EVENT_OFF))

        if config.pair.keyFile != nil { try startPair() }

        mailbox = try LoopMailbox()
        try check(sd_event_add_io(event, &mailboxSource, mailbox.fd, UInt32(EPOLLIN.rawValue), mailboxHandler, selfPointer), "add mailbox")
        try startNetwork()

        // Leases that expired while we were down go now, with their signals.
        engine.tick()
        drainCommits()
        if let fatal { throw fatal }

        updateStatus(force: true, ready: true)
        logger.notice("tandemd started", metadata: [
            "server_id": "\(engine.state.serverId)", "state": "\(stateDir)",
            "bus": "\(options.userBus ? "session" : "system")", "version": "\(TandemVersion.string)",
        ])
        let loop = sd_event_loop(event)
        httpServer?.stop { [self] in
            // Serve the calls that were already inside, then let them answer.
            mailbox.drain()
            drainCommits()
        }
        if let fatal { throw fatal }
        guard loop >= 0 else { throw StartupError("event loop failed: \(String(cString: strerror(-loop)))") }
        try? engine.persistCounters()
        sd_bus_flush(bus)
        sd_bus_release_name(bus, BusNames.service)
        sd_bus_flush_close_unref(bus)
        self.bus = nil
        sd_event_source_unref(flushSource)
        sd_event_source_unref(expirySource)
        sd_event_source_unref(propertiesSource)
        sd_event_source_unref(mailboxSource)
        sd_event_source_unref(pairIOSource)
        sd_event_source_unref(pairTickSource)
        sd_event_unref(event)
        logger.notice("tandemd stopped", metadata: ["commits": "\(engine.commitCount)", "changes": "\(engine.committedChanges)"])
        return 0
    }

    static let pairTickUSec: UInt64 = 50_000

    /// Opens the pair link and restores the pair, if one was formed.
    func startPair() throws {
        let host = try PairHost(config: config.pair, engine: engine, logger: logger)
        host.attach()
        host.onStatusChange = { [unowned self] names in
            server.announceInfoChanged(names)
            updateStatus()
        }
        server.pairControl = host
        pairHost = host
        try check(sd_event_add_io(event, &pairIOSource, host.socket.fd, UInt32(EPOLLIN.rawValue), pairIOHandler, selfPointer), "add pair socket")
        var now: UInt64 = 0
        sd_event_now(event, clockid_t(CLOCK_MONOTONIC), &now)
        try check(sd_event_add_time(event, &pairTickSource, clockid_t(CLOCK_MONOTONIC), now + Self.pairTickUSec, 1000, pairTickHandler, selfPointer), "add pair timer")
        sd_event_source_set_enabled(pairTickSource, Int32(SD_EVENT_ON))
        logger.notice("pair link open", metadata: ["listen": "\(host.boundAddress)", "witness": "\(config.pair.witness ?? "none")", "role": "\(host.role)"])
    }

    /// Starts the network API on the `Listen=` addresses (none: no network API).
    func startNetwork() throws {
        let addresses = try config.listen.map { raw -> ListenAddress in
            guard let a = ListenAddress(parsing: raw) else { throw StartupError("bad Listen= address '\(raw)'") }
            return a
        }
        guard !addresses.isEmpty else { return }
        var tokens: [String] = []
        if let path = config.clientTokenFile {
            do { tokens = try NetworkAPI.readTokens(path: path) } catch {
                throw StartupError("ClientTokenFile=\(path): cannot read a token from it")
            }
        }
        let api = NetworkAPI(backend: EngineBackend(mailbox: mailbox, daemon: self), tokens: tokens)
        networkAPI = api
        var netLogger = logger
        netLogger.logLevel = max(logger.logLevel, .notice)
        let tls = config.tlsCertificate.flatMap { cert in config.tlsKey.map { TLSFiles(certificate: cert, key: $0) } }
        let http: HTTPServer
        do {
            http = try HTTPServer(api: api, addresses: addresses, tls: tls, logger: netLogger)
            try http.start()
        } catch { throw StartupError("network API: \(error)") }
        httpServer = http
        server.info.listenAddresses = http.boundAddresses
        if let port = http.boundAddresses.first.flatMap({ $0.split(separator: ":").last }).flatMap({ Int($0) }) { pairHost?.apiPort = port }
        logger.notice("network API listening", metadata: [
            "addresses": "\(http.boundAddresses.joined(separator: " "))", "tokens": "\(tokens.isEmpty ? "none" : "required")",
            "scheme": "\(http.scheme)",
        ])
    }

    var selfPointer: UnsafeMutableRawPointer { Unmanaged.passUnretained(self).toOpaque() }

    func scheduleFlush() {
        if engine.stagedCount >= 256 {
            do { try flushNow() } catch { die(error) }
        } else {
            sd_event_source_set_enabled(flushSource, Int32(SD_EVENT_ONESHOT))
        }
    }


    func schedulePropertyChanges() {
        var enabled: Int32 = 0
        sd_event_source_get_enabled(propertiesSource, &enabled)
        guard enabled == Int32(SD_EVENT_OFF) else { return }
        var now: UInt64 = 0
        sd_event_now(event, clockid_t(CLOCK_MONOTONIC), &now)
        sd_event_source_set_time(propertiesSource, now + Self.propertiesDelayUSec)
        sd_event_source_set_enabled(propertiesSource, Int32(SD_EVENT_ONESHOT))
    }

    func flushNow() throws {
        do { try engine.flush() } catch {
            throw StartupError("cannot commit to the state database: \(error)")
        }
        armExpiry()
        updateStatus()
    }

    /// Commits what is staged before start-up completes or the loop ends.
    func drainCommits() {
        do { try flushNow() } catch { die(error) }
    }

    func armExpiry() {
        if let next = engine.nextExpiry {
            sd_event_source_set_time(expirySource, next)
            sd_event_source_set_enabled(expirySource, Int32(SD_EVENT_ONESHOT))
        } else {
            sd_event_source_set_enabled(expirySource, Int32(SD_EVENT_OFF))
        }
    }

    /// A failure after which state in memory may be ahead of the disk: stop at once so
    /// that nothing unacknowledged is ever answered; systemd restarts us from the disk.
    func die(_ error: Error) {
        logger.critical("fatal: \(error)")
        fatal = error
        sd_event_exit(event, 1)
    }

    public var statusLine: String {
        let s = engine.state
        var line = "\(s.licenses.count) license\(s.licenses.count == 1 ? "" : "s"), \(s.totalInUse)/\(s.totalSeats(at: engine.now)) seats in use"
        if let p = pairHost, p.role != .standalone {
            line += ", \(p.role) \(p.serving ? "serving" : "standby"), \(p.pairStatus), epoch \(s.epoch)"
        } else {
            line += ", unpaired"
        }
        return line
    }

    func updateStatus(force: Bool = false, ready: Bool = false) {
        let line = statusLine
        guard force || line != lastStatus else { return }
        lastStatus = line
        sd_notify(0, (ready ? "READY=1\n" : "") + "STATUS=\(line)")
    }

    func onSignal(_ sig: Int32) {
        if sig == SIGHUP {
            reload()
            return
        }
        logger.notice("stopping on signal", metadata: ["signal": "\(sig == SIGTERM ? "SIGTERM" : "SIGINT")"])
        sd_notify(0, "STOPPING=1\nSTATUS=Stopping")
        drainCommits()
        server.emitPendingPropertyChanges()
        sd_event_exit(event, 0)
    }

    func reload() {
        sd_notify(0, "RELOADING=1\nSTATUS=Reloading configuration")
        do {
            let c = try DaemonConfig.load(path: options.configPath, required: options.configGiven)
            let settings = try Self.loadSettings(c)
            var tokens: [String] = []
            if let path = c.clientTokenFile {
                do { tokens = try NetworkAPI.readTokens(path: path) } catch {
                    throw StartupError("ClientTokenFile=\(path): cannot read a token from it")
                }
            }
            if c.listen != config.listen || c.tlsCertificate != config.tlsCertificate || c.tlsKey != config.tlsKey {
                logger.warning("Listen=, TLSCertificate= and TLSKey= changes take effect when tandemd restarts")
            }
            config = c
            engine.settings = settings
            server.authorizer = authorizer()
            networkAPI?.setTokens(tokens)
            logger.notice("configuration reloaded", metadata: [
                "vendor_keys": "\(settings.trustedKeys.keys.count)", "client_tokens": "\(tokens.count)",
            ])
        } catch {
            logger.error("configuration not reloaded, keeping the previous one: \(error)")
        }
        updateStatus(force: true, ready: true)
    }
}

private func daemon(_ userdata: UnsafeMutableRawPointer?) -> Daemon {
    Unmanaged<Daemon>.fromOpaque(userdata!).takeUnretainedValue()
}

private let signalHandler: sd_event_signal_handler_t = { _, info, userdata in
    daemon(userdata).onSignal(Int32(info!.pointee.ssi_signo))
    return 0
}

private let flushHandler: sd_event_handler_t = { _, userdata in
    let d = daemon(userdata)
    do { try d.flushNow() } catch { d.die(error) }
    return 0
}

private let mailboxHandler: sd_event_io_handler_t = { _, _, _, userdata in
    daemon(userdata).mailbox.drain()
    return 0
}

private let propertiesHandler: sd_event_time_handler_t = { _, _, userdata in
    daemon(userdata).server.emitPendingPropertyChanges()
    return 0
}

private let pairIOHandler: sd_event_io_handler_t = { _, _, _, userdata in
    let d = daemon(userdata)
    d.pairHost?.drain()
    return 0
}

private let pairTickHandler: sd_event_time_handler_t = { source, usec, userdata in
    let d = daemon(userdata)
    d.pairHost?.tick()
    sd_event_source_set_time(source, usec + Daemon.pairTickUSec)
    sd_event_source_set_enabled(source, Int32(SD_EVENT_ON))
    return 0
}

private let expiryHandler: sd_event_time_handler_t = { _, _, userdata in
    let d = daemon(userdata)
    d.engine.tick()
    do { try d.flushNow() } catch { d.die(error) }
    return 0
}

@inline(__always) func check(_ r: Int32, _ what: String) throws {
    if r < 0 { throw StartupError("\(what): \(String(cString: strerror(-r)))") }
}

extension DaemonOptions {
    public static let usage = """
        Usage: tandemd [--config FILE] [--state-dir DIR] [--user] [--log-level LEVEL]

        Tandem license server daemon.

          --config FILE     configuration file (default /etc/tandem/tandemd.conf;
                            drop-ins in FILE.d/*.conf)
          --state-dir DIR   state directory (default $STATE_DIRECTORY, else /var/lib/tandem)
          --user            serve on the session bus instead of the system bus
          --log-level L     debug, info (default), notice, warning, error
          --version         print the version and exit
        """

    public enum Parsed {
        case run(DaemonOptions, Logger.Level)
        case exit(String)
    }

    public static func parse(_ args: [String]) throws -> Parsed {
        var o = DaemonOptions()
        var level = Logger.Level.info
        var i = 0
        func value(_ flag: String) throws -> String {
            i += 1
            guard i < args.count else { throw StartupError("\(flag) needs a value") }
            return args[i]
        }
        while i < args.count {
            let a = args[i]
            switch a {
            case "--config":
                o.configPath = try value(a)
                o.configGiven = true
            case "--state-dir": o.stateDir = try value(a)
            case "--user": o.userBus = true
            case "--log-level":
                let v = try value(a)
                guard let l = Logger.Level(rawValue: v) else { throw StartupError("unknown log level '\(v)'") }
                level = l
            case "--version": return .exit("tandemd \(TandemVersion.string)")
            case "-h", "--help": return .exit(usage)
            default: throw StartupError("unknown argument '\(a)' (see --help)")
            }
            i += 1
        }
        return .run(o, level)
    }
}
