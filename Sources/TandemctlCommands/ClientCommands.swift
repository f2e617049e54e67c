import ArgumentParser
import Foundation
import TandemAPI
import TandemCore
import TandemClient
import TandemCommandLine

/// Options shared by `tandemctl client` commands.
struct ClientOptions: ParsableArguments {
    @Option(help: "Client configuration (default: $TANDEM_CLIENT_CONFIG, else /etc/tandem/client.conf).")
    var config: String?
    @Option(help: "Per-request timeout in seconds.") var timeout: Double = 5
    @Option(help: "Seconds to keep trying while no server is serving (a failover in progress).") var failoverWait:
        Double = 8
    @Flag(help: "Print JSON instead of text.") var json = false

    var path: String { ClientConfiguration.path(override: config) }

    func client() throws -> TandemClient {
        do {
            let c = try ClientConfiguration.load(path: path)
            guard !c.servers.isEmpty else { throw CLIFailure("\(path): no Server= configured") }
            return TandemClient(servers: c.servers, token: try c.token(), timeout: timeout, failoverWait: failoverWait)
        } catch let e as ClientConfiguration.ParseError {
            throw CLIFailure(e.description)
        }
    }
}

func leaseJSON(_ l: LeaseView) -> [String: Any] {
    [
        "lease_id": l.leaseId, "feature": l.feature, "client": l.client, "count": l.count, "acquired_at": l.acquiredAt,
        "expires_at": l.expiresAt, "expires_usec": l.expiresUsec, "ttl_sec": l.ttlSec, "server_id": l.serverId,
        "user": l.user ?? "", "host": l.host ?? "", "token": l.token ?? ""
    ]
}

/// Who holds the lease, for the server's usage history.
struct HolderOptions: ParsableArguments {
    @Option(help: "The holder's login name for the usage history (default: yours).") var user: String?
    @Option(help: "The holder's host name for the usage history (default: this host's).") var host: String?
    var holder: Holder {
        let os = Holder.thisProcess
        return Holder(user: user ?? os.user, host: host ?? os.host)
    }
}

func defaultClientId() -> String {
    "\(ProcessInfo.processInfo.environment["USER"] ?? "uid\(getuid())")@\(ProcessInfo.processInfo.hostName)"
}

/// Exit statuses of `tandemctl client run` besides COMMAND's own.
public enum RunExit {
    /// No seat available: COMMAND was not started (EX_TEMPFAIL).
    public static let noSeat: Int32 = 75
    /// No server reachable or serving (EX_UNAVAILABLE).
    public static let unavailable: Int32 = 69
}

func failure(_ e: ClientError) -> CLIFailure {
    CLIFailure(e.description, exitCode: e.isUnreachable ? RunExit.unavailable : 1)
}

/// Runs a client call, turning its error into a one-line CLI failure.
func attempt<T>(_ body: () async throws(ClientError) -> T) async throws(CLIFailure) -> T {
    do { return try await body() } catch { throw failure(error) }
}

/// Runs a client call, returning its error instead of throwing it.
func outcome<T>(_ body: () async throws(ClientError) -> T) async -> Result<T, ClientError> {
    do { return .success(try await body()) } catch { return .failure(error) }
}

struct ClientCmd: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "client",
        abstract: "The product side: configure servers, test the connection, acquire seats over the network.",
        subcommands: [
            Configure.self, TestConnection.self, ClientAcquire.self, ClientRenew.self, ClientRelease.self,
            ClientLeases.self, ClientUsage.self, Run.self, Borrow.self, Return.self, Check.self
        ])

    struct Configure: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Test a server and write the client configuration.")
        @OptionGroup var options: ClientOptions
        @Option(help: "The primary server, HOST[:PORT] (port 7390 by default).") var server: String
        @Flag(help: "Fill Backup= from the server's own report of its peer.") var enableBackup = false
        @Option(help: "File holding the bearer token (ClientTokenFile= on the server).") var tokenFile: String?
        @Flag(help: "Write the configuration even if the server cannot be reached.") var force = false

        func run() async throws {
            var config = ClientConfiguration(server: server, tokenFile: tokenFile)
            config.borrowDirectory = (try? ClientConfiguration.load(path: options.path))?.borrowDirectory
            var token: String?
            do { token = try config.token() } catch { throw CLIFailure(error.description) }
            let client = TandemClient(servers: [server], token: token, timeout: options.timeout)
            switch await outcome({ () async throws(ClientError) in try await client.status(of: server) }) {
            case .success(let (status, _)):
                config.borrowKey = status.borrowKey
                if enableBackup {
                    if let peer = status.peerAddress {
                        config.backup = peer
                    } else if !force {
                        throw CLIFailure(
                            "\(server) (\(status.serverId)) is not paired: it reports no backup; configure "
                                + "without --enable-backup or use --force"
                        )
                    }
                }
                print(
                    "\(server): \(status.serverId), \(status.role), "
                        + "\(status.pairStatus)\(status.serving ? ", serving" : "")"
                )
            case .failure(let e):
                guard force else { throw CLIFailure("cannot reach \(e.detail) (use --force to write it anyway)") }
                print("warning: \(server) is not reachable; writing it anyway")
            }
            let path = options.path
            try? FileManager.default.createDirectory(
                atPath: (path as NSString).deletingLastPathComponent, withIntermediateDirectories: true)
            do { try config.text.write(toFile: path, atomically: true, encoding: .utf8) } catch {
                throw CLIFailure("cannot write \(path): \(error.localizedDescription)")
            }
            print("Wrote \(path): Server=\(server)" + (config.backup.map { ", Backup=\($0)" } ?? ""))
        }
    }

    struct TestConnection: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "test-connection", abstract: "Check every configured server.")
        @OptionGroup var options: ClientOptions
        func run() async throws {
            let client = try options.client()
            var rows: [[String: Any]] = []
            var anyServing = false
            for server in client.servers {
                switch await outcome({ () async throws(ClientError) in try await client.status(of: server) }) {
                case .success(let (s, rtt)):
                    anyServing = anyServing || s.serving
                    rows.append([
                        "server": server, "reachable": true, "rtt_ms": (rtt * 1000 * 10).rounded() / 10,
                        "server_id": s.serverId,
                        "role": s.role, "pair_status": s.pairStatus, "serving": s.serving
                    ])
                case .failure(let error):
                    rows.append(["server": server, "reachable": false, "error": error.detail])
                }
            }
            if options.json {
                print(Output.json(rows))
            } else {
                print(
                    Output.table(
                        ["SERVER", "REACHABLE", "RTT", "SERVER ID", "ROLE", "PAIR STATUS", "SERVING"],
                        rows.map { r in
                            r["reachable"] as? Bool == true
                                ? [
                                    r["server"] as! String, "yes", "\(r["rtt_ms"]!) ms", r["server_id"] as! String,
                                    r["role"] as! String,
                                    r["pair_status"] as! String, (r["serving"] as? Bool == true) ? "yes" : "no"
                                ]
                                : [r["server"] as! String, "no", "-", "-", "-", "-", r["error"] as! String]
                        }))
            }
            if !anyServing { throw CLIFailure("no configured server is serving", exitCode: RunExit.unavailable) }
        }
    }

    struct ClientAcquire: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "acquire", abstract: "Acquire seats over the network.")
        @OptionGroup var options: ClientOptions
        @Argument(help: "Feature name.") var feature: String
        @Option(help: "Number of seats.") var count: UInt32 = 1
        @Option(help: "Client id (default: user@host).") var client: String?
        @Option(help: "Lease time in seconds.") var ttl: UInt64?
        @Option(help: "Request id (default: generated).") var requestId: String?
        @Option(help: "When no seat is free, wait up to this many seconds for one (the server's queue).")
        var wait: Double = 0
        @OptionGroup var holder: HolderOptions
        func run() async throws {
            let c = try options.client()
            let id = client ?? defaultClientId()
            let l = try await attempt { () async throws(ClientError) in
                try await c.acquire(
                    feature: feature, count: count, client: id, ttlSec: ttl, requestId: requestId,
                    holder: holder.holder, wait: wait)
            }
            print(
                options.json
                    ? Output.json(leaseJSON(l))
                    : "Lease \(l.leaseId): \(l.count) seat\(l.count == 1 ? "" : "s") of \(l.feature) until "
                        + "\(l.expiresAt) (server \(l.serverId))"
            )
        }
    }

    struct ClientRenew: AsyncParsableCommand {
        static let configuration = CommandConfiguration(commandName: "renew", abstract: "Renew a lease.")
        @OptionGroup var options: ClientOptions
        @Argument(help: "Lease id.") var id: String
        func run() async throws {
            let c = try options.client()
            let l = try await attempt { () async throws(ClientError) in try await c.renew(leaseId: id) }
            print(options.json ? Output.json(leaseJSON(l)) : "Lease \(l.leaseId) renewed until \(l.expiresAt)")
        }
    }

    struct ClientRelease: AsyncParsableCommand {
        static let configuration = CommandConfiguration(commandName: "release", abstract: "Release a lease.")
        @OptionGroup var options: ClientOptions
        @Argument(help: "Lease id.") var id: String
        func run() async throws {
            let c = try options.client()
            try await attempt { () async throws(ClientError) in try await c.release(leaseId: id) }
            print(options.json ? Output.json(["lease_id": id, "released": true]) : "Released \(id)")
        }
    }

    struct ClientLeases: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "leases", abstract: "List leases (of one client with --client).")
        @OptionGroup var options: ClientOptions
        @Option(help: "Only this client's leases.") var client: String?
        func run() async throws {
            let c = try options.client()
            let who = client
            let list = try await attempt { () async throws(ClientError) in try await c.leases(client: who) }
            if options.json {
                print(Output.json(list.map(leaseJSON)))
            } else {
                print(
                    Output.table(
                        ["LEASE", "FEATURE", "CLIENT", "COUNT", "EXPIRES"],
                        list.map { [$0.leaseId, $0.feature, $0.client, String($0.count), $0.expiresAt] }))
            }
        }
    }

    struct ClientUsage: AsyncParsableCommand {
        static let configuration = CommandConfiguration(commandName: "usage", abstract: "The server's usage table.")
        @OptionGroup var options: ClientOptions
        func run() async throws {
            let c = try options.client()
            let rows = try await attempt { () async throws(ClientError) in try await c.features() }
            do {
                if options.json {
                    print(
                        Output.json(
                            rows.map {
                                [
                                    "feature": $0.feature, "seats": $0.seats, "in_use": $0.inUse,
                                    "reserved": $0.reserved, "available": $0.available, "denied": $0.denied
                                ] as [String: Any]
                            }))
                } else {
                    print(
                        Output.table(
                            ["FEATURE", "SEATS", "IN USE", "RESERVED", "AVAILABLE", "DENIED"],
                            rows.map {
                                [
                                    $0.feature, String($0.seats), String($0.inUse), String($0.reserved),
                                    String($0.available), String($0.denied)
                                ]
                            }))
                }
            }
        }
    }

    struct Run: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Hold a lease while COMMAND runs.",
            discussion: """
                With a valid borrow of the feature on this machine (client borrow), runs COMMAND at \
                once, without a server. Otherwise acquires the seats, runs COMMAND, renews the lease \
                while it runs (moving to the backup if \
                the server fails), releases it when COMMAND exits and exits with COMMAND's status \
                (128+N if a signal N ended it). If no seat is available (within --wait seconds, when \
                given) COMMAND is not started and the exit status is 75; if no server is reachable, 69.
                """)
        @OptionGroup var options: ClientOptions
        @Option(help: "Feature name.") var feature: String
        @Option(help: "Number of seats.") var count: UInt32 = 1
        @Option(help: "Client id (default: user@host).") var client: String?
        @Option(help: "Lease time in seconds (renewed at a third of it).") var ttl: UInt64?
        @Option(help: "When no seat is free, wait up to this many seconds for one, then start COMMAND.")
        var wait: Double = 0
        @OptionGroup var holder: HolderOptions
        @Argument(parsing: .captureForPassthrough, help: "The command and its arguments (after --).") var command:
            [String] = []

        func run() async throws {
            var argv = command
            if argv.first == "--" { argv.removeFirst() }
            guard !argv.isEmpty else {
                throw CLIFailure("no COMMAND given (tandemctl client run --feature F -- COMMAND ...)", exitCode: 64)
            }
            // A borrow for this machine serves without a server (it is why one borrows).
            if let setup = try? BorrowSetup(options), let cert = try? setup.store.check(feature, key: setup.key),
                cert.seats >= count
            {
                throw ExitCode(ChildProcess.run(argv))
            }
            let c = try options.client()
            let lease: LeaseView
            let id = client ?? defaultClientId()
            switch await outcome({ () async throws(ClientError) in
                try await c.acquire(
                    feature: feature, count: count, client: id, ttlSec: ttl, holder: holder.holder, wait: wait)
            }) {
            case .success(let l): lease = l
            case .failure(let e):
                if e.name == "InsufficientSeats" { throw CLIFailure("no seat: \(e.detail)", exitCode: RunExit.noSeat) }
                throw failure(e)
            }
            let keeper = LeaseKeeper(client: c, lease: lease)
            keeper.start { e in
                FileHandle.standardError.write(Data("tandemctl: lease \(lease.leaseId) lost: \(e.description)\n".utf8))
            }
            let status = ChildProcess.run(argv)
            keeper.stop()
            if case .failure(let e) = await outcome({ () async throws(ClientError) in
                try await c.release(leaseId: lease.leaseId)
            }) {
                FileHandle.standardError.write(
                    Data("tandemctl: could not release \(lease.leaseId): \(e.description)\n".utf8))
            }
            throw ExitCode(status)
        }
    }
}

/// Runs a child with the terminal's stdio, forwarding SIGINT/SIGTERM/SIGHUP to it.
enum ChildProcess {
    static func run(_ argv: [String]) -> Int32 {
        // We may have been started with these signals blocked (an inherited mask): unblock
        // them here and in the child, so that a stop request reaches COMMAND.
        var handled = sigset_t()
        sigemptyset(&handled)
        for sig in [SIGINT, SIGTERM, SIGHUP] { sigaddset(&handled, sig) }
        for sig in [SIGINT, SIGTERM, SIGHUP] { signal(sig, SIG_IGN) }
        pthread_sigmask(SIG_UNBLOCK, &handled, nil)
        var pid: pid_t = 0
        var attrs: posix_spawnattr_t = posix_spawnattr_t()
        posix_spawnattr_init(&attrs)
        defer { posix_spawnattr_destroy(&attrs) }
        // The child gets default signal dispositions back.
        var defaults = sigset_t()
        sigemptyset(&defaults)
        for sig in [SIGINT, SIGTERM, SIGHUP] { sigaddset(&defaults, sig) }
        posix_spawnattr_setsigdefault(&attrs, &defaults)
        var empty = sigset_t()
        sigemptyset(&empty)
        posix_spawnattr_setsigmask(&attrs, &empty)
        posix_spawnattr_setflags(&attrs, Int16(POSIX_SPAWN_SETSIGDEF | POSIX_SPAWN_SETSIGMASK))
        let cargs = argv.map { strdup($0) } + [nil]
        defer { for p in cargs { free(p) } }
        let rc = posix_spawnp(&pid, argv[0], nil, &attrs, cargs, environ)
        guard rc == 0 else {
            FileHandle.standardError.write(
                Data("tandemctl: cannot run \(argv[0]): \(String(cString: strerror(rc)))\n".utf8))
            return 127
        }
        ForwardTarget.pid = pid
        for sig in [SIGINT, SIGTERM, SIGHUP] {
            signal(sig) { s in kill(ForwardTarget.pid, s) }
        }
        var status: Int32 = 0
        while waitpid(pid, &status, 0) < 0 && errno == EINTR {}
        if status & 0x7f == 0 { return (status >> 8) & 0xff }
        return 128 + (status & 0x7f)
    }
}

enum ForwardTarget {
    nonisolated(unsafe) static var pid: pid_t = 0
}
