import Foundation
import Hummingbird
import Logging
import TandemAPI
import TandemCore
import TandemMetrics

/// The HTTP/JSON API that licensed products use (`/v1`), plus `/healthz` and `/readyz`.
public struct NetworkAPI: Sendable {
    public let backend: any LicenseBackend
    /// Accepted bearer tokens; empty = no token needed. Replaceable at run time (reload).
    let tokenStore: TokenStore
    public static let maxBodyBytes = 64 * 1024

    /// How long a request's body may take to arrive (`RequestTimeoutSec=`).
    public var requestTimeoutSec: Double

    public init(backend: any LicenseBackend, tokens: [ClientToken] = [], requestTimeoutSec: Double = 10) {
        self.backend = backend
        tokenStore = TokenStore(tokens)
        self.requestTimeoutSec = requestTimeoutSec
    }

    /// Replaces the accepted tokens (e.g. after the token file changed).
    public func setTokens(_ tokens: [ClientToken]) { tokenStore.set(tokens) }

    static let encoder: JSONEncoder = {
        let e = JSONEncoder()
        e.keyEncodingStrategy = .convertToSnakeCase
        e.outputFormatting = [.sortedKeys]
        return e
    }()

    static func json<T: Encodable>(_ value: T, status: HTTPResponse.Status = .ok) -> Response {
        var headers = HTTPFields()
        headers[.contentType] = "application/json"
        let data = (try? encoder.encode(value)) ?? Data("null".utf8)
        return Response(status: status, headers: headers, body: .init(byteBuffer: ByteBuffer(bytes: data)))
    }

    /// A lease, or the problem that stood in its way.
    static func reply(_ result: Result<LeaseView, TandemError>) -> Response {
        switch result {
        case .success(let lease): return json(lease)
        case .failure(let e): return Problem(e).response()
        }
    }

    /// Who sent `request`: a network client, named by the token it presented (nil without
    /// tokens), or nil when a token is needed and none of them was presented.
    func caller(_ request: Request) -> Caller? {
        let tokens = tokenStore.tokens
        guard !tokens.isEmpty else { return .networkClient(token: nil) }
        guard let header = request.headers[.authorization], header.hasPrefix("Bearer ") else { return nil }
        return ClientToken.match(Array(header.dropFirst(7).utf8), in: tokens).map { .networkClient(token: $0.name) }
    }

    typealias Handler = @Sendable (Request, BasicRequestContext) async throws -> Response

    struct Route: Sendable {
        var method: HTTPRequest.Method
        /// OpenAPI style: `/v1/leases/{id}`.
        var path: String
        var handler: Handler
    }

    /// Every route the API serves. The router and the OpenAPI test both read this table.
    func routes() -> [Route] {
        let api = self
        func authorized(
            _ body: @escaping @Sendable (Request, BasicRequestContext, Caller) async throws -> Response
        )
            -> Handler
        {
            { request, context in
                guard let caller = api.caller(request) else { return Problem.unauthorized.response() }
                return try await body(request, context, caller)
            }
        }
        return [
            Route(method: .get, path: "/healthz") { _, _ in api.textResponse("ok\n") },
            Route(method: .get, path: "/readyz") { _, _ in
                let s = await api.backend.serverStatus()
                return s.serving
                    ? api.textResponse("ready\n")
                    : Problem(name: "NotServing", status: 503, detail: "this node is not serving licenses now")
                        .response()
            },
            Route(method: .get, path: "/v1/openapi.yaml") { _, _ in
                var headers = HTTPFields()
                headers[.contentType] = "application/yaml"
                return Response(
                    status: .ok, headers: headers, body: .init(byteBuffer: ByteBuffer(string: OpenAPISpec.yaml)))
            },
            Route(method: .get, path: "/v1/server") { _, _ in Self.json(await api.backend.serverStatus()) },
            // Prometheus scrapes this (its `authorization` setting sends the token when
            // ClientTokenFile= is set), with the same default as /v1: loopback, no token.
            Route(
                method: .get, path: "/metrics",
                handler: authorized { _, _, _ in
                    var headers = HTTPFields()
                    headers[.contentType] = ServerMetrics.contentType
                    let text = await api.backend.metrics().exposition(including: .shared)
                    return Response(status: .ok, headers: headers, body: .init(byteBuffer: ByteBuffer(string: text)))
                }),
            Route(
                method: .get, path: "/v1/queue",
                handler: authorized { _, _, _ in Self.json(await api.backend.queue()) }),
            Route(
                method: .get, path: "/v1/features",
                handler: authorized { _, _, _ in
                    let rows = await api.backend.features().map {
                        FeatureRow(
                            feature: $0.feature, seats: $0.seats, inUse: $0.inUse, reserved: $0.reserved,
                            available: $0.available, denied: $0.denied)
                    }
                    return Self.json(rows)
                }),
            Route(method: .post, path: "/v1/leases", handler: authorized { await api.acquire($0, $2, borrow: false) }),
            Route(method: .post, path: "/v1/borrows", handler: authorized { await api.acquire($0, $2, borrow: true) }),
            Route(
                method: .get, path: "/v1/leases",
                handler: authorized { request, _, _ in
                    let client = request.uri.queryParameters.get("client")
                    return Self.json(await api.backend.leases(client: client))
                }),
            Route(
                method: .get, path: "/v1/usage/history",
                handler: authorized { request, _, _ in
                    await api.history(request) { (q: HistoryQuery) -> Result<[UsageBucketView], TandemError> in
                        guard let feature = q.filter.feature else {
                            return .failure(TandemError(.invalidArgs, "'feature' is required"))
                        }
                        return await api.backend.usageHistory(feature: feature, q).map { $0.map(UsageBucketView.init) }
                    }
                }),
            Route(
                method: .get, path: "/v1/sessions",
                handler: authorized { request, _, _ in
                    await api.history(request) { await api.backend.sessions($0).map { $0.map(SessionView.init) } }
                }),
            Route(
                method: .get, path: "/v1/denials",
                handler: authorized { request, _, _ in
                    await api.history(request) { await api.backend.denials($0).map { $0.map(DenialView.init) } }
                }),
            Route(
                method: .get, path: "/v1/leases/{id}",
                handler: authorized { _, context, _ in
                    Self.reply(await api.backend.lease(id: context.parameters.get("id") ?? ""))
                }),
            Route(
                method: .post, path: "/v1/leases/{id}/renew",
                handler: authorized { _, context, caller in
                    Self.reply(await api.backend.renew(leaseId: context.parameters.get("id") ?? "", caller: caller))
                }),
            Route(
                method: .delete, path: "/v1/leases/{id}",
                handler: authorized { _, context, caller in
                    switch await api.backend.release(leaseId: context.parameters.get("id") ?? "", caller: caller) {
                    case .success: return Response(status: .noContent)
                    case .failure(let e): return Problem(e).response()
                    }
                })
        ]
    }

    /// `POST /v1/leases` and `POST /v1/borrows`.
    func acquire(_ request: Request, _ caller: Caller, borrow: Bool) async -> Response {
        // A JSON body only: a browser cannot send one cross-origin without asking
        // first (a CORS preflight, which this server never grants), so a web page
        // cannot take seats behind an administrator's back.
        guard Self.isJSON(request) else { return Problem.notJSON.response() }
        // Announced too large: refused before a byte of it is read.
        if let length = request.headers[.contentLength].flatMap({ Int($0) }), length > Self.maxBodyBytes {
            return Problem.tooLarge.response()
        }
        let body: ByteBuffer
        switch await Self.collect(request, within: requestTimeoutSec) {
        case .some(.success(let b)): body = b
        case .some(.failure): return Problem.tooLarge.response()
        case nil: return Problem.requestTimeout.response()
        }
        let parsed: AcquireBody
        do throws(TandemError) { parsed = try AcquireBody(json: Data(buffer: body), borrow: borrow) } catch {
            return Problem(error).response()
        }
        switch await backend.acquire(parsed, caller: caller) {
        case .success(let (lease, created)): return Self.json(lease, status: created ? .created : .ok)
        case .failure(let e): return Problem(e).response()
        }
    }

    /// The request's body, at most `maxBodyBytes` of it, if it arrives within `seconds` (nil
    /// when it does not: a client announcing a body and sending nothing holds no handler).
    static func collect(_ request: Request, within seconds: Double) async -> Result<ByteBuffer, any Error>? {
        await withTaskGroup(of: Result<ByteBuffer, any Error>?.self) { group in
            group.addTask {
                do { return .success(try await request.body.collect(upTo: maxBodyBytes)) } catch {
                    return .failure(error)
                }
            }
            group.addTask {
                try? await Task.sleep(for: .milliseconds(Int64(seconds * 1000)))
                return nil
            }
            let first = await group.next() ?? nil
            group.cancelAll()
            return first
        }
    }

    /// Whether the request says its body is JSON (`application/json`, parameters allowed).
    static func isJSON(_ request: Request) -> Bool {
        guard let type = request.headers[.contentType] else { return false }
        let media = type.split(separator: ";", maxSplits: 1).first ?? ""
        return media.trimmingCharacters(in: .whitespaces).lowercased() == "application/json"
    }

    public func router() -> Router<BasicRequestContext> {
        let router = Router(options: .autoGenerateHeadEndpoints)
        let table = routes()
        // A known path asked with a method it does not serve (any method, TRACE too) is 405 with
        // `Allow`; HEAD is answered wherever GET is (without a body).
        let allowed = Dictionary(grouping: table, by: \.path).map { path, routes in
            let served = routes.map(\.method)
            return (path, (served.contains(.get) ? served + [.head] : served).map(\.rawValue).joined(separator: ", "))
        }
        router.add(middleware: RequestMetricsMiddleware())
        router.add(middleware: ProblemMiddleware(allowed: allowed))
        for r in table {
            router.on(Self.routerPath(r.path), method: r.method, use: r.handler)
        }
        return router
    }

    static func routerPath(_ openAPIPath: String) -> RouterPath {
        RouterPath(stringLiteral: openAPIPath.replacingOccurrences(of: "{id}", with: ":id"))
    }

    /// Every operation the router serves, as "METHOD path".
    public var operations: [String] { routes().map { "\($0.method.rawValue) \($0.path)" } }

    /// A history read: the query parsed from the request's parameters (a bad one is a 400
    /// problem), then the rows as JSON.
    func history<T: Encodable & Sendable>(
        _ request: Request, _ read: (HistoryQuery) async -> Result<[T], TandemError>
    ) async -> Response {
        let query: HistoryQuery
        do throws(TandemError) {
            query = try HistoryQuery(
                parameters: request.uri.queryParameters.map { (String($0.key), String($0.value)) },
                now: Self.realtimeNow())
        } catch {
            return Problem(error).response()
        }
        switch await read(query) {
        case .success(let rows): return Self.json(rows)
        case .failure(let e): return Problem(e).response()
        }
    }

    static func realtimeNow() -> USec {
        var ts = timespec()
        clock_gettime(CLOCK_REALTIME, &ts)
        return USec(ts.tv_sec) * usecPerSecond + USec(ts.tv_nsec / 1000)
    }

    func textResponse(_ text: String) -> Response {
        var headers = HTTPFields()
        headers[.contentType] = "text/plain"
        return Response(status: .ok, headers: headers, body: .init(byteBuffer: ByteBuffer(string: text)))
    }

}
