import Foundation
#if canImport(FoundationNetworking)
    import FoundationNetworking
#endif
import Logging
import TandemAPI
import TandemCore

/// A failure seen by the client: a problem answered by a server, or no server reachable.
public struct ClientError: Error, CustomStringConvertible, Sendable {
    public var name: String
    public var status: Int
    public var detail: String
    public var description: String { status > 0 ? "\(name): \(detail)" : detail }

    public static func unreachable(_ detail: String) -> ClientError {
        ClientError(name: "Unreachable", status: 0, detail: detail)
    }
    public var isUnreachable: Bool { status == 0 }
}

/// The product side of Tandem: an ordered list of servers (the primary, then its backup),
/// per-request timeouts, request ids on every acquisition, and failover: on a connection
/// failure or a node that says it is not serving (503), it moves to the next server; when none
/// serves (a failover in progress), it tries them all again for up to `failoverWait` seconds.
public final class TandemClient: @unchecked Sendable {
    public let servers: [String]
    let token: String?
    public let timeout: TimeInterval
    /// How long to keep trying when no server serves: a pair's failover takes its
    /// FailoverTimeoutSec (default 0.8 s, often set longer) and an election.
    public let failoverWait: TimeInterval
    let session: URLSession
    let logger: Logger
    private let lock = NSLock()
    private var current = 0

    static let decoder: JSONDecoder = {
        let d = JSONDecoder()
        d.keyDecodingStrategy = .convertFromSnakeCase
        return d
    }()

    /// An `https://` server is verified against the system's certificate authorities.
    public init(
        servers: [String], token: String? = nil, timeout: TimeInterval = 5, failoverWait: TimeInterval = 8,
        logger: Logger = Logger(label: "tandem-client")
    ) {
        self.servers = servers
        self.token = token
        self.timeout = timeout
        self.failoverWait = failoverWait
        self.logger = logger
        let config = URLSessionConfiguration.ephemeral
        config.timeoutIntervalForRequest = timeout
        config.timeoutIntervalForResource = timeout * 2
        config.httpMaximumConnectionsPerHost = 4
        session = URLSession(configuration: config)
    }

    /// The server requests go to first (the last one that answered).
    public var currentServer: String { lock.withLock { servers.isEmpty ? "" : servers[current] } }

    /// `HOST`, `HOST:PORT`, `[IPV6]:PORT` or a full `http(s)://` URL; the port defaults to 7390.
    public static func url(_ server: String, _ path: String) -> URL? {
        if server.contains("://") { return URL(string: server + path) }
        var hostPort = server
        if hostPort.filter({ $0 == ":" }).count > 1 && !hostPort.hasPrefix("[") {
            hostPort = "[\(hostPort)]"  // a bare IPv6 address
        }
        let hasPort = hostPort.hasPrefix("[") ? hostPort.contains("]:") : hostPort.contains(":")
        return URL(string: "http://" + hostPort + (hasPort ? "" : ":7390") + path)
    }

    /// One request to one server.
    /// `held`: how long the server may hold the request before it answers (a wait for a seat),
    /// on top of the timeout.
    public func send(
        _ method: String, _ path: String, body: Data? = nil, to server: String, held: TimeInterval = 0
    ) async throws(ClientError) -> (Int, Data) {
        guard let url = Self.url(server, path) else {
            throw ClientError(name: "InvalidArgs", status: 400, detail: "bad server address '\(server)'")
        }
        var req = URLRequest(url: url, timeoutInterval: timeout + held)
        req.httpMethod = method
        if let body {
            req.httpBody = body
            req.setValue("application/json", forHTTPHeaderField: "Content-Type")
        }
        if let token { req.setValue("Bearer \(token)", forHTTPHeaderField: "Authorization") }
        do {
            let (data, response) = try await session.data(for: req)
            guard let http = response as? HTTPURLResponse else {
                throw ClientError.unreachable("\(server): not an HTTP answer")
            }
            return (http.statusCode, data)
        } catch let e as ClientError {
            throw e
        } catch {
            throw ClientError.unreachable("\(server): \(error.localizedDescription)")
        }
    }

    static func problem(_ status: Int, _ data: Data) -> ClientError {
        if let p = try? decoder.decode(ProblemBody.self, from: data) {
            return ClientError(name: p.name, status: status, detail: p.detail)
        }
        return ClientError(
            name: "HTTP\(status)", status: status, detail: String(decoding: data.prefix(200), as: UTF8.self))
    }

    /// Runs `call` against the current server, then the others in order, moving on when a
    /// server is unreachable or not serving (503). Other answers, errors included, are final.
    /// When no server serves, the round is repeated every `retryPause` until `failoverWait` has passed
    /// (a retried acquisition carries the same request id, so it never takes seats twice).
    /// A small part of a failover (under a second by default): a client finds the new serving
    /// node soon after it serves. A round costs each node one refused request.
    static let retryPause: TimeInterval = 0.1

    func withFailover(
        _ method: String, _ path: String, body: Data? = nil, held: TimeInterval = 0
    ) async throws(ClientError) -> (Int, Data) {
        guard !servers.isEmpty else { throw ClientError.unreachable("no servers configured") }
        // A held request may end in a failover late in its hold: the search for the serving node
        // gets its full time after it.
        let deadline = Date().addingTimeInterval(failoverWait + held)
        while true {
            do throws(ClientError) {
                return try await failoverRound(method, path, body: body, held: held)
            } catch {
                if Date().addingTimeInterval(Self.retryPause) >= deadline { throw error }
                logger.info("no server is serving; trying again", metadata: ["detail": "\(error.detail)"])
                try? await Task.sleep(nanoseconds: UInt64(Self.retryPause * 1e9))
            }
        }
    }

    /// One try of every server, the current one first.
    func failoverRound(
        _ method: String, _ path: String, body: Data?, held: TimeInterval = 0
    ) async throws(ClientError) -> (Int, Data) {
        let start = lock.withLock { current }
        var failures: [String] = []
        for k in 0..<servers.count {
            let i = (start + k) % servers.count
            do {
                let (status, data) = try await send(method, path, body: body, to: servers[i], held: held)
                if status == 503 {
                    failures.append("\(servers[i]): not serving")
                    continue
                }
                lock.withLock { current = i }
                return (status, data)
            } catch {
                failures.append(error.detail)
                logger.info("server unreachable, trying the next one", metadata: ["server": "\(servers[i])"])
            }
        }
        throw ClientError.unreachable("no server is serving (\(failures.joined(separator: "; ")))")
    }

    func decode<T: Decodable>(_ type: T.Type, _ status: Int, _ data: Data, expect: Set<Int>) throws(ClientError) -> T {
        guard expect.contains(status) else { throw Self.problem(status, data) }
        do { return try Self.decoder.decode(T.self, from: data) } catch {
            throw ClientError(name: "BadResponse", status: status, detail: "unexpected answer: \(error)")
        }
    }

    // MARK: - Operations

    /// `GET /v1/server` on one server, with the round-trip time.
    public func status(of server: String) async throws(ClientError) -> (ServerStatus, rtt: TimeInterval) {
        let t0 = Date()
        let (s, data) = try await send("GET", "/v1/server", to: server)
        let rtt = Date().timeIntervalSince(t0)
        return (try decode(ServerStatus.self, s, data, expect: [200]), rtt)
    }

    /// Takes seats; `requestId` (generated when nil) makes retries and failovers return the same lease.
    /// The server's usage history records `holder` (by default this process's login and host names).
    /// With `wait`, when no seat is free it waits for one up to that long: held requests of at most
    /// a minute each, asked again with the same request id (which keeps the place in the server's
    /// queue, and after a failover queues at the node that serves, never granting twice).
    public func acquire(
        feature: String, count: UInt32 = 1, client: String, ttlSec: UInt64? = nil,
        requestId: String? = nil, holder: Holder = .thisProcess, wait: TimeInterval = 0
    ) async throws(ClientError) -> LeaseView {
        var body: [String: Any] = [
            "feature": feature, "count": count, "client": client,
            "request_id": requestId ?? UUID().uuidString.lowercased()
        ]
        if let ttlSec { body["ttl_sec"] = ttlSec }
        if let user = holder.user { body["user"] = user }
        if let host = holder.host { body["host"] = host }
        let deadline = Date().addingTimeInterval(wait)
        while true {
            let left = deadline.timeIntervalSinceNow.rounded(.up)
            let held = left >= 1 ? min(left, TimeInterval(AcquireBody.maxWaitSec)) : 0
            body["wait_sec"] = held > 0 ? Int(held) : nil
            let data = try! JSONSerialization.data(withJSONObject: body)
            let sent = Date()
            let (s, reply) = try await withFailover("POST", "/v1/leases", body: data, held: held)
            // The held request ran out and the wait has not: ask again (the place is kept). A
            // refusal that came at once (the request could never wait) is final.
            if s == 409, held > 0, Date().timeIntervalSince(sent) >= held - 1, deadline.timeIntervalSinceNow >= 1,
                Self.problem(s, reply).name == "InsufficientSeats"
            {
                continue
            }
            return try decode(LeaseView.self, s, reply, expect: [200, 201])
        }
    }

    public func renew(leaseId: String) async throws(ClientError) -> LeaseView {
        let (s, reply) = try await withFailover("POST", "/v1/leases/\(Self.escape(leaseId))/renew")
        return try decode(LeaseView.self, s, reply, expect: [200])
    }

    public func release(leaseId: String) async throws(ClientError) {
        let (s, reply) = try await withFailover("DELETE", "/v1/leases/\(Self.escape(leaseId))")
        guard s == 204 else { throw Self.problem(s, reply) }
    }

    public func leases(client: String? = nil) async throws(ClientError) -> [LeaseView] {
        let q = client.map { "?client=" + (Self.escape($0)) } ?? ""
        let (s, reply) = try await withFailover("GET", "/v1/leases" + q)
        return try decode([LeaseView].self, s, reply, expect: [200])
    }

    public func features() async throws(ClientError) -> [FeatureRow] {
        let (s, reply) = try await withFailover("GET", "/v1/features")
        return try decode([FeatureRow].self, s, reply, expect: [200])
    }

    static func escape(_ s: String) -> String {
        s.addingPercentEncoding(withAllowedCharacters: .alphanumerics.union(CharacterSet(charactersIn: "-._~"))) ?? s
    }
}

/// Keeps a lease alive: renews it at a fraction of its lease time until stopped, through
/// failovers. `onLost` is called if the servers say the lease is gone.
public final class LeaseKeeper: @unchecked Sendable {
    let client: TandemClient
    public private(set) var lease: LeaseView
    private var task: Task<Void, Never>?
    private let lock = NSLock()

    public init(client: TandemClient, lease: LeaseView) {
        self.client = client
        self.lease = lease
    }

    public func start(fraction: Double = 1.0 / 3, onLost: @escaping @Sendable (ClientError) -> Void = { _ in }) {
        let interval = max(0.2, Double(lease.ttlSec) * fraction)
        let id = lease.leaseId
        task = Task { [self] in
            while !Task.isCancelled {
                try? await Task.sleep(nanoseconds: UInt64(interval * 1e9))
                if Task.isCancelled { break }
                do throws(ClientError) {
                    let l = try await client.renew(leaseId: id)
                    lock.withLock { lease = l }
                } catch {
                    if !error.isUnreachable {
                        onLost(error)
                        return
                    }
                    // Unreachable: keep trying at the next interval (the lease outlives a few).
                }
            }
        }
    }

    public func stop() {
        task?.cancel()
        task = nil
    }
}

extension Holder {
    /// This process's login name (its effective uid's, else `$USER`) and host name.
    public static var thisProcess: Holder {
        var pw = passwd()
        var result: UnsafeMutablePointer<passwd>?
        var buf = [CChar](repeating: 0, count: 4096)
        let login =
            getpwuid_r(geteuid(), &pw, &buf, buf.count, &result) == 0 && result != nil
            ? pw.pw_name.map { String(cString: $0) } : nil
        var name = [CChar](repeating: 0, count: 256)
        let host =
            gethostname(&name, name.count - 1) == 0
            ? String(decoding: name.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self) : nil
        return Holder(
            user: login ?? ProcessInfo.processInfo.environment["USER"], host: host.flatMap { $0.isEmpty ? nil : $0 })
    }
}
