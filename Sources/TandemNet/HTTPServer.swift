import Foundation
import Hummingbird
import HummingbirdCore
import HummingbirdTLS
import NIOSSL
import Logging
import NIOCore
import ServiceLifecycle
import TandemConfig

/// Runs the network API on one or more addresses, on SwiftNIO's threads: one service group
/// runs an application per address (`Listeners`), so that they start, fail and stop together.
public final class HTTPServer: @unchecked Sendable {
    let api: NetworkAPI
    let addresses: [ListenAddress]
    let logger: Logger
    private let lock = NSLock()
    private var bound: [String] = []
    private var ports: [Int] = []
    private var failure: String?
    private var group: ServiceGroup?
    private var running: Task<Void, Never>?

    let tls: TLSConfiguration?

    let limiter: ConnectionLimiter

    public init(
        api: NetworkAPI, addresses: [ListenAddress], tls: TLSFiles? = nil,
        limits: ConnectionLimits = ConnectionLimits(),
        logger: Logger
    ) throws {
        self.api = api
        self.addresses = addresses
        self.logger = logger
        limiter = ConnectionLimiter(limits: limits, logger: logger)
        if let tls {
            do {
                let chain = try NIOSSLCertificate.fromPEMFile(tls.certificate).map {
                    NIOSSLCertificateSource.certificate($0)
                }
                let key = try NIOSSLPrivateKey(file: tls.key, format: .pem)
                self.tls = TLSConfiguration.makeServerConfiguration(
                    certificateChain: chain, privateKey: .privateKey(key))
            } catch {
                throw HTTPServerError(
                    description: "cannot load TLS certificate \(tls.certificate) or key \(tls.key): \(error)")
            }
        } else {
            self.tls = nil
        }
    }

    public var scheme: String { tls == nil ? "http" : "https" }

    /// The addresses actually bound (with the real port when 0 was asked for).
    public var boundAddresses: [String] {
        lock.withLock { bound }
    }

    /// Connections refused for a limit since start, and connections open now.
    public var refusedConnections: UInt64 { limiter.refused }
    public var openConnections: Int { limiter.open }

    /// The port of the first address bound (what the pair's peer tells clients to use here).
    public var firstPort: Int? { lock.withLock { ports.first } }

    /// Starts listening on every address; returns once all are bound or one failed (tandemd
    /// reports READY=1 only with its network API up).
    public func start(timeout: TimeInterval = 10) throws {
        let router = api.router()
        let started = DispatchSemaphore(value: 0)
        var apps: [any Service] = []
        for address in addresses {
            let limiter = limiter
            let http1 = HTTP1Channel.Configuration(
                additionalChannelHandlers: [ConnectionLimitHandler(limiter: limiter), ParserErrorHandler()],
                idleTimeout: .milliseconds(Int64(limiter.limits.idleTimeoutSec * 1000)))
            let server: HTTPServerBuilder =
                try tls.map { try .tls(.http1(configuration: http1), tlsConfiguration: $0) }
                ?? .http1(configuration: http1)
            apps.append(
                Application(
                    router: router,
                    server: server,
                    // A deep accept queue: after a failover every product reconnects at once.
                    configuration: .init(
                        address: .hostname(address.host, port: address.port), serverName: "tandemd", backlog: 1024),
                    onServerRunning: { [self] channel in
                        let local =
                            channel.localAddress.map { a -> String in
                                let ip = a.ipAddress ?? address.host
                                return ip.contains(":") ? "[\(ip)]:\(a.port ?? 0)" : "\(ip):\(a.port ?? 0)"
                            } ?? address.description
                        lock.withLock {
                            bound.append(local)
                            ports.append(channel.localAddress?.port ?? address.port)
                        }
                        started.signal()
                    },
                    logger: logger))
        }
        let group = ServiceGroup(
            configuration: .init(services: [Listeners(apps: apps)], gracefulShutdownSignals: [], logger: logger))
        self.group = group
        running = Task.detached { [self] in
            do {
                try await group.run()
            } catch {
                lock.withLock {
                    failure = "cannot listen on \(addresses.map(\.description).joined(separator: " ")): \(error)"
                }
                for _ in addresses { started.signal() }
            }
        }
        let deadline = DispatchTime.now() + timeout
        for _ in addresses {
            guard started.wait(timeout: deadline) == .success else {
                throw HTTPServerError(description: "the network API did not start within \(Int(timeout)) s")
            }
            if let f = lock.withLock({ failure }) { throw HTTPServerError(description: f) }
        }
    }

    /// Stops accepting connections and lets the requests in progress finish; `stopped` is called
    /// (on a thread of the server's) once they have.
    public func stop(_ stopped: @escaping @Sendable () -> Void) {
        guard let group, let running else { return stopped() }
        self.group = nil
        Task.detached {
            await group.triggerGracefulShutdown()
            await running.value
            stopped()
        }
    }

    /// Closes the connections still open (after `stop`, when their requests took too long).
    public func cancel() {
        running?.cancel()
    }
}

/// The applications of every address as one service: they run side by side, and a graceful
/// shutdown reaches them all at once (a service group would stop its services one by one).
struct Listeners: Service {
    let apps: [any Service]

    func run() async throws {
        // The graceful shutdown is a task-local of the group's: every child task sees it.
        try await withThrowingDiscardingTaskGroup { group in
            for app in apps { group.addTask { try await app.run() } }
        }
    }
}

/// PEM files for HTTPS (`TLSCertificate=`, `TLSKey=`).
public struct TLSFiles: Sendable, Equatable {
    public var certificate: String
    public var key: String
    public init(certificate: String, key: String) {
        self.certificate = certificate
        self.key = key
    }
}

public struct HTTPServerError: Error, CustomStringConvertible {
    public let description: String
}
