import Foundation
import Hummingbird
import TandemAPI
import TandemCore
import TandemMetrics

/// RFC 9457 problem details (the wire type is shared with the client).
public typealias Problem = ProblemBody

extension ProblemBody {
    public init(_ error: TandemError) {
        self.init(name: error.code.rawValue, status: Self.status(for: error.code), detail: error.message)
        servingAddress = error.servingAddress
    }

    public static func status(for code: TandemErrorCode) -> Int {
        switch code {
        case .insufficientSeats, .licenseInUse, .seatsReserved, .licensesActive, .licenseAlreadyActive: return 409
        case .unknownFeature, .leaseNotFound, .licenseNotFound, .reservationNotFound: return 404
        case .invalidArgs, .invalidLicense, .wrongServer, .licenseExpired: return 400
        case .accessDenied, .interactiveAuthorizationRequired, .policyDenied: return 403
        case .notServing: return 503
        case .notPrimary, .serverIdUsed, .peerNotPrepared, .pairState: return 409
        case .peerUnreachable: return 502
        case .failed: return 500
        }
    }

    static let unauthorized = Problem(
        name: "Unauthorized", status: 401, detail: "a valid 'Authorization: Bearer <token>' header is required")
    static let tooLarge = Problem(name: "PayloadTooLarge", status: 413, detail: "request body is larger than 64 KiB")
    static let requestTimeout = Problem(
        name: "RequestTimeout", status: 408, detail: "the request's body did not arrive in time")
    static let notJSON = Problem(
        name: "UnsupportedMediaType", status: 415,
        detail: "the request body must be JSON (Content-Type: application/json)")

    /// 405, with the `Allow` header RFC 9110 requires.
    static func methodNotAllowed(_ method: HTTPRequest.Method, allow: String) -> Response {
        Problem(
            name: "MethodNotAllowed", status: 405, detail: "\(method.rawValue) is not served here (allowed: \(allow))"
        )
        .response(allow: allow)
    }

    func response(allow: String? = nil) -> Response {
        var headers = HTTPFields()
        headers[.contentType] = "application/problem+json"
        if status == 401 { headers[.wwwAuthenticate] = "Bearer" }
        if let allow { headers[.allow] = allow }
        let data = (try? NetworkAPI.encoder.encode(self)) ?? Data()
        return Response(status: .init(code: status), headers: headers, body: .init(byteBuffer: ByteBuffer(bytes: data)))
    }
}

/// Every error the router or a handler throws leaves as a problem document: a known path asked
/// with a method it does not serve (405 with `Allow`), a path that does not exist (404), an error
/// of the HTTP layer, or anything unexpected (500, logged).
struct ProblemMiddleware<Context: RequestContext>: RouterMiddleware {
    /// Each path of the API (OpenAPI style, `{id}` one segment) and the methods it allows.
    let allowed: [(path: String, allow: String)]

    /// The `Allow` value of the API path that `path` is, if it is one.
    func allow(for path: String) -> String? {
        let given = path.split(separator: "/", omittingEmptySubsequences: false)
        return allowed.first { known in
            let pattern = known.path.split(separator: "/", omittingEmptySubsequences: false)
            return pattern.count == given.count
                && zip(pattern, given).allSatisfy { p, g in p == g || (p.hasPrefix("{") && !g.isEmpty) }
        }?.allow
    }

    func handle(
        _ request: Request, context: Context, next: (Request, Context) async throws -> Response
    ) async throws -> Response {
        do {
            return try await next(request, context)
        } catch let error as any HTTPResponseError {
            let status = error.status
            if status == .notFound, let allow = allow(for: request.uri.path) {
                return Problem.methodNotAllowed(request.method, allow: allow)
            }
            let name = status == .notFound ? "NotFound" : "HTTP\(status.code)"
            let detail = status == .notFound ? "no such resource: \(request.uri.path)" : status.reasonPhrase
            return Problem(name: name, status: status.code, detail: detail).response()
        } catch {
            context.logger.error("request failed", metadata: ["path": "\(request.uri.path)", "error": "\(error)"])
            return Problem(name: "Failed", status: 500, detail: "the request failed on the server").response()
        }
    }
}

/// Counts and times every answer by method, route and status (`tandem_requests_total`,
/// `tandem_request_duration_seconds` with api="http"). Outside the problem middleware, so it
/// sees the problem answers too; the route is the matched template (a bounded set of label
/// values), "unmatched" when none matched.
struct RequestMetricsMiddleware<Context: RequestContext>: RouterMiddleware {
    static var knownMethods: Set<HTTPRequest.Method> {
        [.get, .head, .post, .put, .delete, .patch, .options, .trace, .connect]
    }

    func handle(
        _ request: Request, context: Context, next: (Request, Context) async throws -> Response
    ) async throws -> Response {
        let started = ContinuousClock.now
        // A method is any token a client cares to send: those HTTP defines, or "other", so that
        // no client can grow the series without bound.
        let method = Self.knownMethods.contains(request.method) ? request.method.rawValue : "other"
        func record(_ status: Int) {
            Instruments.shared.request(
                api: "http", method: "\(method) \(context.endpointPath ?? "unmatched")", result: "\(status)",
                duration: ContinuousClock.now - started)
        }
        do {
            let response = try await next(request, context)
            record(response.status.code)
            return response
        } catch let error as any HTTPResponseError {
            record(error.status.code)
            throw error
        }
    }
}
