import Foundation
import TandemAPI
import TandemBus
import TandemBusClient
import TandemCore
import TandemMetrics
import TandemNet
import TandemTesting
import Testing

struct HTTPResult {
    var status: Int
    var body: String
    var headers: String
    var json: Any? { try? JSONSerialization.jsonObject(with: Data(body.utf8)) }
    var object: [String: Any] { json as? [String: Any] ?? [:] }
}

/// One request with curl (a real HTTP client on loopback).
func http(
    _ method: String, _ url: String, body: String? = nil, token: String? = nil, bodyFile: String? = nil,
    contentType: String? = "application/json", extraArgs: [String] = []
) throws -> HTTPResult {
    // HEAD with -I (which prints the head): curl would wait for a body after `-X HEAD`.
    // "Content-Type:" sends none.
    var args = ["-s", "-S"] + (method == "HEAD" ? ["-I"] : ["-X", method, "-D", "-"]) + ["--max-time", "10"]
    args += ["-H", "Content-Type:" + (contentType.map { " " + $0 } ?? "")]
    if let token { args += ["-H", "Authorization: Bearer \(token)"] }
    if let body { args += ["--data-binary", body] }
    if let bodyFile { args += ["--data-binary", "@" + bodyFile] }
    args += extraArgs + [url]
    let r = try run("/usr/bin/curl", args)
    guard r.status == 0 else { throw TestFailure("curl failed (\(r.status)): \(r.stderr)") }
    let parts = r.stdout.components(separatedBy: "\r\n\r\n")
    let head = parts.first ?? ""
    let status = Int(head.split(separator: " ").dropFirst().first ?? "") ?? 0
    return HTTPResult(status: status, body: parts.dropFirst().joined(separator: "\r\n\r\n"), headers: head)
}

/// A daemon whose network API takes the tokens of `tokenFile` (written private, mode 0600).
struct TokenFixture {
    let dir: String
    let fixture: Fixture
    let base: String
    init(_ tokenFile: String) throws {
        dir = makeTempDir("token")
        try tokenFile.write(toFile: dir + "/tokens", atomically: true, encoding: .utf8)
        chmod(dir + "/tokens", 0o600)
        fixture = try Fixture(extraConfig: "ClientTokenFile=\(dir)/tokens\n")
        base = "http://" + (try fixture.daemon.httpAddress)
    }
}

@Suite(.serialized) struct NetworkAPITests {
    @Test func everyEndpointAndStatusCode() throws {
        let f = try Fixture()
        let base = "http://" + (try f.daemon.httpAddress)
        #expect(try http("GET", base + "/healthz").status == 200)
        #expect(try http("GET", base + "/readyz").status == 200)
        let server = try http("GET", base + "/v1/server")
        #expect(server.status == 200)
        #expect(server.object["server_id"] as? String == f.serverId)
        #expect(server.object["role"] as? String == "standalone")
        #expect(server.object["pair_status"] as? String == "unpaired")
        #expect(server.object["serving"] as? Bool == true)

        // Acquire: 201, a retry with the same request id: 200 and the same lease.
        let created = try http(
            "POST", base + "/v1/leases",
            body: #"{"feature":"cad","count":2,"client":"ws-1","request_id":"job-1","ttl_sec":120}"#)
        #expect(created.status == 201, "\(created.body)")
        let id = created.object["lease_id"] as? String ?? ""
        #expect(created.object["server_id"] as? String == f.serverId)
        #expect(created.object["ttl_sec"] as? Int == 120)
        #expect((created.object["expires_at"] as? String)?.hasSuffix("Z") == true)
        let retry = try http(
            "POST", base + "/v1/leases",
            body: #"{"feature":"cad","count":2,"client":"ws-1","request_id":"job-1","ttl_sec":120}"#)
        #expect(retry.status == 200)
        #expect(retry.object["lease_id"] as? String == id)

        #expect(try http("GET", base + "/v1/leases/\(id)").object["count"] as? Int == 2)
        #expect(
            (try http("GET", base + "/v1/leases?client=ws-1").json as? [[String: Any]])?.map {
                $0["lease_id"] as? String
            } == [id])
        #expect((try http("GET", base + "/v1/leases?client=other").json as? [[String: Any]])?.isEmpty == true)
        #expect(try http("POST", base + "/v1/leases/\(id)/renew").status == 200)
        let features = try http("GET", base + "/v1/features")
        #expect(features.status == 200)
        #expect((features.json as? [[String: Any]])?.first?["in_use"] as? Int == 2)

        // Errors are problem details named like the D-Bus errors.
        let noSeats = try http("POST", base + "/v1/leases", body: #"{"feature":"cad","count":4,"client":"ws-2"}"#)
        #expect(noSeats.status == 409)
        #expect(noSeats.headers.lowercased().contains("content-type: application/problem+json"))
        #expect(noSeats.object["type"] as? String == "urn:tandem:problem:InsufficientSeats")
        #expect(
            try http("POST", base + "/v1/leases", body: #"{"feature":"nope","client":"ws-2"}"#).object["type"]
                as? String == "urn:tandem:problem:UnknownFeature")
        #expect(try http("POST", base + "/v1/leases", body: #"{"feature":"nope","client":"ws-2"}"#).status == 404)
        #expect(try http("GET", base + "/v1/leases/lease-nope").status == 404)
        #expect(try http("POST", base + "/v1/leases/lease-nope/renew").status == 404)
        #expect(try http("DELETE", base + "/v1/leases/lease-nope").status == 404)

        #expect(try http("DELETE", base + "/v1/leases/\(id)").status == 204)
        #expect(try http("GET", base + "/v1/leases/\(id)").status == 404)
        let spec = try http("GET", base + "/v1/openapi.yaml")
        #expect(spec.status == 200)
        #expect(spec.body == (try String(contentsOfFile: packageRoot + "/docs/openapi.yaml", encoding: .utf8)))
    }

    @Test func garbageTruncatedAndOversizedRequestsChangeNothing() throws {
        let f = try Fixture()
        let base = "http://" + (try f.daemon.httpAddress)
        let c = try f.bus.client()
        _ = try http("POST", base + "/v1/leases", body: #"{"feature":"cad","client":"keep"}"#)
        let before = try snapshot(c)
        let bad = [
            "garbage", #"{"feature":"cad","client":"ws""#, "[1,2,3]", #"{"feature":"cad"}"#, #"{"client":"ws"}"#,
            #"{"feature":"cad","client":"ws","count":0}"#, #"{"feature":"cad","client":"ws","count":1.5}"#,
            #"{"feature":"cad","client":"ws","count":"2"}"#, #"{"feature":"cad","client":"ws","count":true}"#,
            #"{"feature":"cad","client":"ws","ttl_sec":0}"#, #"{"feature":"cad","client":"ws","colour":"red"}"#,
            #"{"feature":"c a d","client":"ws"}"#, #"{"feature":"cad","client":""}"#, ""
        ]
        for body in bad {
            let r = try http("POST", base + "/v1/leases", body: body)
            #expect(r.status == 400, "\(body) -> \(r.status) \(r.body)")
            #expect(r.object["type"] as? String == "urn:tandem:problem:InvalidArgs", "\(body)")
        }
        let big = makeTempDir("big") + "/body.json"
        try (#"{"feature":"cad","client":""# + String(repeating: "x", count: 100_000) + #""}"#).write(
            toFile: big, atomically: true, encoding: .utf8)
        #expect(try http("POST", base + "/v1/leases", bodyFile: big).status == 413)
        #expect(try snapshot(c) == before)
    }

    /// A web page cannot take seats (a state-changing request needs a JSON body, which a browser
    /// sends cross-origin only after a preflight that is never granted); HEAD where GET is;
    /// 405 with Allow; every error a problem document.
    @Test func theHTTPEdges() throws {
        let f = try Fixture()
        let base = "http://" + (try f.daemon.httpAddress)
        let c = try f.bus.client()
        let before = try snapshot(c)
        let acquire = #"{"feature":"cad","client":"page"}"#
        for type in ["text/plain", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x", nil] {
            let r = try http("POST", base + "/v1/leases", body: acquire, contentType: type)
            #expect(r.status == 415, "\(type ?? "none") -> \(r.status) \(r.body)")
            #expect(r.object["type"] as? String == "urn:tandem:problem:UnsupportedMediaType")
            #expect(r.headers.lowercased().contains("content-type: application/problem+json"))
        }
        #expect(try snapshot(c) == before)
        let json = try http("POST", base + "/v1/leases", body: acquire, contentType: "Application/JSON; charset=utf-8")
        #expect(json.status == 201, "\(json.body)")

        for path in ["/healthz", "/v1/server", "/v1/features", "/v1/leases", "/v1/openapi.yaml"] {
            let head = try http("HEAD", base + path)
            #expect(head.status == 200, "HEAD \(path) -> \(head.status)")
            #expect(head.body.isEmpty)
        }
        let wrong: [(String, String, String)] = [
            ("PUT", "/v1/leases", "GET, POST, HEAD"), ("DELETE", "/v1/server", "GET, HEAD"),
            ("GET", "/v1/leases/x/renew", "POST"), ("PATCH", "/v1/leases/x", "GET, DELETE, HEAD")
        ]
        for (method, path, allow) in wrong {
            let r = try http(method, base + path)
            #expect(r.status == 405, "\(method) \(path) -> \(r.status)")
            let allowed = r.headers.split(separator: "\r\n").first { $0.lowercased().hasPrefix("allow:") }
            #expect(
                Set((allowed?.dropFirst(6) ?? "").split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) })
                    == Set(allow.components(separatedBy: ", ")), "\(method) \(path): \(allowed ?? "no Allow")")
            #expect(r.object["type"] as? String == "urn:tandem:problem:MethodNotAllowed")
        }
        let missing = try http("GET", base + "/v2/nothing")
        #expect(missing.status == 404 && missing.object["type"] as? String == "urn:tandem:problem:NotFound")
        #expect(missing.headers.lowercased().contains("content-type: application/problem+json"))
    }

    @Test func httpAndDBusSeeTheSameLeases() throws {
        let f = try Fixture()
        let base = "http://" + (try f.daemon.httpAddress)
        let c = try f.bus.client()
        let viaHTTP =
            try http("POST", base + "/v1/leases", body: #"{"feature":"cad","count":1,"client":"net"}"#).object[
                "lease_id"] as? String
        let viaBus = try c.call("Acquire", [.string("cad"), .uint32(1), .string("bus"), .vardict([])])[0].stringValue
        let ids = Set(
            try c.call("ListLeases").first?.arrayValue?.compactMap { $0.structValue?.first?.stringValue } ?? [])
        #expect(viaHTTP != nil && ids.contains(viaHTTP!))
        #expect(try http("GET", base + "/v1/leases/\(viaBus!)").object["client"] as? String == "bus")
        // A network client may not end a local user's lease; root over D-Bus may end any.
        #expect(try http("DELETE", base + "/v1/leases/\(viaBus!)").status == 403)
        _ = try c.call("Release", [.string(viaHTTP!)])
        #expect(try http("GET", base + "/v1/leases/\(viaHTTP!)").status == 404)
    }

    @Test func tokensAreEnforced() throws {
        let t = try TokenFixture("# clients\ns3cret-token-1\n")
        let (f, base) = (t.fixture, t.base)
        let body = #"{"feature":"cad","client":"ws"}"#
        let none = try http("POST", base + "/v1/leases", body: body)
        #expect(none.status == 401)
        #expect(none.headers.lowercased().contains("www-authenticate: bearer"))
        #expect(try http("POST", base + "/v1/leases", body: body, token: "wrong").status == 401)
        #expect(try http("GET", base + "/v1/features", token: "s3cret-token-").status == 401)
        #expect(try http("POST", base + "/v1/leases", body: body, token: "s3cret-token-1").status == 201)
        #expect(try http("GET", base + "/v1/server").status == 200)
        #expect(try http("GET", base + "/v1/openapi.yaml").status == 200)
        #expect(try f.bus.client().call("ListLeases").first?.arrayValue?.count == 1)
    }

    /// With named tokens, a lease answers to the token that took it: another token (named or
    /// not) is refused 403 and changes nothing, its request id included; an administrator over
    /// D-Bus may still release it.
    @Test func aLeaseAnswersOnlyToTheTokenThatTookIt() throws {
        let t = try TokenFixture("# name token\ncad-farm farm-secret-1\nrender render-secret-2\nlegacy-secret-3\n")
        let (f, base) = (t.fixture, t.base)
        let body = #"{"feature":"cad","client":"ws","request_id":"job-7","ttl_sec":600}"#
        let taken = try http("POST", base + "/v1/leases", body: body, token: "farm-secret-1")
        #expect(taken.status == 201, "\(taken.body)")
        let id = taken.object["lease_id"] as? String ?? ""
        let expires = taken.object["expires_usec"] as? Int ?? 0
        for other in ["render-secret-2", "legacy-secret-3"] {
            for (method, path) in [("POST", "/v1/leases/\(id)/renew"), ("DELETE", "/v1/leases/\(id)")] {
                let r = try http(method, base + path, token: other)
                #expect(r.status == 403, "\(method) \(path) with another token: \(r.status) \(r.body)")
                #expect(r.object["type"] as? String == "urn:tandem:problem:AccessDenied", "\(r.body)")
            }
            // The same request id from another token neither returns the lease nor takes seats.
            let retried = try http("POST", base + "/v1/leases", body: body, token: other)
            #expect(retried.status == 403, "\(retried.body)")
        }
        let after = try http("GET", base + "/v1/leases/\(id)", token: "render-secret-2")
        #expect(after.status == 200 && after.object["expires_usec"] as? Int == expires, "\(after.body)")
        #expect(try f.bus.client().call("ListLeases").first?.arrayValue?.count == 1)
        // The owner renews and releases; an administrator releases any lease.
        #expect(try http("POST", base + "/v1/leases/\(id)/renew", token: "farm-secret-1").status == 200)
        #expect(try http("DELETE", base + "/v1/leases/\(id)", token: "farm-secret-1").status == 204)
        let second = try http(
            "POST", base + "/v1/leases", body: #"{"feature":"cad","client":"ws"}"#, token: "render-secret-2")
        #expect(second.status == 201)
        _ = try f.bus.client().call("Release", [.string(second.object["lease_id"] as? String ?? "")])
        #expect(try f.bus.client().call("ListLeases").first?.arrayValue?.count == 0)
    }

    /// A token file that cannot be read as one is refused at start with its path, line and reason.
    @Test func malformedTokenFilesAreRefusedWithTheirLine() throws {
        let dir = makeTempDir("token")
        let bus = try TestBus()
        for (text, reason) in [
            ("a one\nb two three\n", "tokens:2: expected 'NAME TOKEN' or 'TOKEN', found 3 fields"),
            ("farm one\nfarm two\n", "tokens:2: the name 'farm' is used twice"),
            ("bad/name secret\n", "tokens:1: token name may contain only"),
            ("# only a comment\n", "tokens: it holds no token")
        ] {
            try text.write(toFile: dir + "/tokens", atomically: true, encoding: .utf8)
            chmod(dir + "/tokens", 0o600)
            let d = try Tandemd(bus: bus, config: "[Server]\nListen=127.0.0.1:0\nClientTokenFile=\(dir)/tokens\n")
            #expect(throws: TestFailure.self) { try d.start() }
            #expect(d.log().contains("ClientTokenFile=\(dir)/\(reason)"), "\(d.log().suffix(400))")
        }
    }

    @Test func tokensAreReloadedOnSIGHUP() throws {
        let t = try TokenFixture("old-token\n")
        let (dir, f, base) = (t.dir, t.fixture, t.base)
        #expect(try http("GET", base + "/v1/features", token: "old-token").status == 200)
        try "new-token\n".write(toFile: dir + "/tokens", atomically: true, encoding: .utf8)
        chmod(dir + "/tokens", 0o600)
        f.daemon.signal(SIGHUP)
        var switched = false
        for _ in 0..<100 where !switched {
            switched = (try? http("GET", base + "/v1/features", token: "new-token").status) == 200
            if !switched { usleep(20_000) }
        }
        #expect(switched)
        #expect(try http("GET", base + "/v1/features", token: "old-token").status == 401)
        // An unreadable token file, or one other users may read, keeps the tokens in force.
        try "".write(toFile: dir + "/tokens", atomically: true, encoding: .utf8)
        chmod(dir + "/tokens", 0o600)
        f.daemon.signal(SIGHUP)
        usleep(300_000)
        #expect(try http("GET", base + "/v1/features", token: "new-token").status == 200)
        try "newer-token\n".write(toFile: dir + "/tokens", atomically: true, encoding: .utf8)
        chmod(dir + "/tokens", 0o644)
        f.daemon.signal(SIGHUP)
        var refused = false
        for _ in 0..<100 where !refused {
            refused = f.daemon.log().contains("ClientTokenFile=\(dir)/tokens: mode 644")
            if !refused { usleep(20_000) }
        }
        #expect(refused, "\(f.daemon.log())")
        #expect(try http("GET", base + "/v1/features", token: "new-token").status == 200)
        #expect(try http("GET", base + "/v1/features", token: "newer-token").status == 401)
    }

    @Test func secretFilesOtherUsersMayReadAreRefusedAtStart() throws {
        let dir = makeTempDir("secrets")
        try "a-token\n".write(toFile: dir + "/tokens", atomically: true, encoding: .utf8)
        let key = try run(binary("tandemctl"), ["pair", "keygen", dir + "/pair.key"])
        #expect(key.status == 0, "\(key.stderr)")
        let bus = try TestBus()
        for (mode, setting, path, config) in [
            (0o644, "ClientTokenFile", dir + "/tokens", "[Server]\nClientTokenFile=\(dir)/tokens\n"),
            (0o620, "ClientTokenFile", dir + "/tokens", "[Server]\nClientTokenFile=\(dir)/tokens\n"),
            (0o604, "KeyFile", dir + "/pair.key", "[Pair]\nKeyFile=\(dir)/pair.key\nListen=127.0.0.1:0\n")
        ] {
            chmod(path, mode_t(mode))
            let d = try Tandemd(bus: bus, config: config)
            #expect(throws: TestFailure.self) { try d.start() }
            let line = "\(setting)=\(path): mode \(String(mode, radix: 8))"
            #expect(d.log().contains(line), "\(d.log())")
        }
        // The same token file, private, is taken.
        chmod(dir + "/tokens", 0o600)
        let d = try Tandemd(bus: bus, config: "[Server]\nClientTokenFile=\(dir)/tokens\n")
        try d.start()
        #expect(try http("GET", "http://" + d.httpAddress + "/v1/features", token: "a-token").status == 200)
    }

    @Test func openAPISpecIsValidAndMatchesTheRoutes() throws {
        let path = packageRoot + "/docs/openapi.yaml"
        let check = try run(
            "/usr/bin/env",
            [
                "python3", "-c",
                """
                import sys, yaml
                from openapi_spec_validator import validate
                spec = yaml.safe_load(open(sys.argv[1]))
                validate(spec)
                for p, item in spec["paths"].items():
                    for m in item:
                        if m in ("get", "post", "put", "delete", "patch", "head"):
                            print(m.upper(), p)
                """, path
            ])
        #expect(check.status == 0, "invalid OpenAPI: \(check.stderr)")
        let specOps = Set(check.stdout.split(separator: "\n").map(String.init))
        let api = NetworkAPI(backend: NullBackend())
        #expect(specOps == Set(api.operations), "spec \(specOps.sorted()) vs routes \(api.operations.sorted())")
        #expect(try String(contentsOfFile: path, encoding: .utf8) == OpenAPISpec.yaml, "run scripts/gen-openapi")
    }

    /// What the HTTP parser refuses is a problem document too (a malformed first request;
    /// after a response the HTTP layer's own bare 400 stands, see ParserErrorHandler).
    @Test func requestsTheParserRefusesGetProblemDocuments() throws {
        let f = try Fixture()
        let port = Int(try f.daemon.httpAddress.split(separator: ":").last!)!
        let cases: [(String, String)] = [
            ("GARBAGE\r\n\r\n", "400"),
            ("GET /v1/server HTTP/1.1\r\nHost: x\r\nBad Header\r\n\r\n", "400"),
            ("GET /v1/server HTTP/9.9\r\nHost: x\r\n\r\n", "400"),
            ("POST /v1/leases HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nContent-Length: 7\r\n\r\nabcde", "400"),
            ("GET /v1/server HTTP/1.1\r\nHost: x\r\nX: " + String(repeating: "a", count: 90_000) + "\r\n\r\n", "431")
        ]
        for (request, status) in cases {
            let fd = connectTCP("127.0.0.1", port)
            try #require(fd >= 0)
            defer { close(fd) }
            _ = request.withCString { send(fd, $0, strlen($0), Int32(MSG_NOSIGNAL)) }
            var answer = ""
            for _ in 0..<20 where !answer.contains("}") {
                let (text, closed) = readSome(fd, seconds: 1)
                answer += text
                if closed { break }
            }
            let head = String(request.prefix(30)).debugDescription
            #expect(answer.hasPrefix("HTTP/1.1 \(status) "), "\(head): \(answer.prefix(200))")
            #expect(answer.contains("Content-Type: application/problem+json"), "\(head): \(answer.prefix(200))")
            #expect(answer.contains(#""type":"urn:tandem:problem:"#), "\(head): \(answer.prefix(300))")
        }
        #expect(try http("GET", "http://" + f.daemon.httpAddress + "/v1/server").status == 200)
    }

    /// schemathesis (PyPI) checks the live server against docs/openapi.yaml: generated requests,
    /// valid and not, every check it has (status codes, schemas of responses, content types,
    /// 405 for undeclared methods, ...), and stateful sequences along the spec's links.
    @Test func schemathesisFindsNoFailure() throws {
        // Without waiting for seats (Queue=no): a generated wait_sec would hold a request longer
        // than schemathesis waits for an answer once its seats are taken (waiting has its own tests).
        let policy = makeTempDir("schemathesis-policy") + "/policy.conf"
        try "[Feature cad]\nQueue=no\n".write(toFile: policy, atomically: true, encoding: .utf8)
        let f = try Fixture(extraConfig: "Policy=\(policy)\n")
        // In a directory of its own (it keeps a cache where it runs), with a fixed seed so that a
        // failure replays.
        let r = try run(
            "/usr/bin/env",
            [
                "-C", makeTempDir("schemathesis"), "schemathesis", "run", "--seed", "20261201",
                packageRoot + "/docs/openapi.yaml", "--url", "http://" + f.daemon.httpAddress,
                "--checks", "all", "--request-timeout", "10", "--no-color"
            ])
        let summary = r.stdout.split(separator: "\n").filter { $0.contains("generated") || $0.contains("failure") }
        #expect(r.status == 0, "\(r.stdout.suffix(6000))\n\(r.stderr.suffix(2000))")
        #expect(summary.contains { $0.contains("passed") }, "\(summary)")
        print("schemathesis: \(summary.joined(separator: "; "))")
    }
}

/// A backend for listing routes only.
struct NullBackend: LicenseBackend {
    func serverStatus() async -> ServerStatus {
        ServerStatus(serverId: "", version: "", role: "", pairStatus: "", serving: false, epoch: 0)
    }
    func acquire(_ request: AcquireBody, caller: Caller) async -> Result<(LeaseView, created: Bool), TandemError> {
        .failure(TandemError(.failed, ""))
    }
    func renew(leaseId: String, caller: Caller) async -> Result<LeaseView, TandemError> {
        .failure(TandemError(.failed, ""))
    }
    func release(leaseId: String, caller: Caller) async -> Result<Void, TandemError> {
        .failure(TandemError(.failed, ""))
    }
    func lease(id: String) async -> Result<LeaseView, TandemError> { .failure(TandemError(.failed, "")) }
    func leases(client: String?) async -> [LeaseView] { [] }
    func features() async -> [FeatureUsage] { [] }
    func queue() async -> [QueueEntry] { [] }
    func metrics() async -> ServerMetrics {
        ServerMetrics(version: "", serverId: "", role: "standalone", pairStatus: "unpaired", serving: true, epoch: 0)
    }
    func usageHistory(feature: String, _ q: HistoryQuery) async -> Result<[UsageBucket], TandemError> { .success([]) }
    func sessions(_ q: HistoryQuery) async -> Result<[Session], TandemError> { .success([]) }
    func denials(_ q: HistoryQuery) async -> Result<[Denial], TandemError> { .success([]) }
}

@Suite(.serialized) struct NetworkTLS {
    @Test func servesHTTPSWithTheConfiguredCertificate() throws {
        let dir = makeTempDir("tls")
        let gen = try run(
            "/usr/bin/openssl",
            [
                "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
                "-keyout", dir + "/key.pem", "-out", dir + "/cert.pem", "-days", "2",
                "-subj", "/CN=tandem-test", "-addext", "subjectAltName=IP:127.0.0.1"
            ])
        #expect(gen.status == 0, "\(gen.stderr)")
        let f = try Fixture(extraConfig: "TLSCertificate=\(dir)/cert.pem\nTLSKey=\(dir)/key.pem\n")
        let address = try f.daemon.httpAddress
        let trusted = try run(
            "/usr/bin/curl", ["-s", "--max-time", "5", "--cacert", dir + "/cert.pem", "https://\(address)/v1/server"])
        #expect(trusted.status == 0, "\(trusted.stderr)")
        #expect(trusted.stdout.contains(f.serverId))
        // Not trusted without the certificate; no plain HTTP on a TLS listener.
        #expect(try run("/usr/bin/curl", ["-s", "--max-time", "5", "https://\(address)/v1/server"]).status == 60)
        #expect(
            try run("/usr/bin/curl", ["-s", "--max-time", "5", "http://\(address)/v1/server"]).stdout.contains(
                f.serverId) == false)
        // The client verifies the server against the system's CAs: an unknown self-signed
        // certificate is refused with a clear reason, and nothing is written.
        let config = makeTempDir("client") + "/client.conf"
        let conf = try clientctl(config, ["configure", "--server", "https://\(address)"])
        #expect(conf.status != 0)
        #expect(conf.stderr.contains("certificate"), "\(conf.stderr)")
        #expect(!FileManager.default.fileExists(atPath: config))
        // Leases over TLS work (curl trusting the certificate).
        let acquired = try run(
            "/usr/bin/curl",
            [
                "-s", "--max-time", "5", "--cacert", dir + "/cert.pem", "-X", "POST",
                "-H", "Content-Type: application/json", "-d", #"{"feature":"cad","client":"tls"}"#,
                "https://\(address)/v1/leases"
            ])
        #expect(acquired.stdout.contains("lease_id"), "\(acquired.stdout)")
        #expect(try leaseCount(f) == 1)
    }

    @Test func halfATLSConfigurationIsRefused() throws {
        let bus = try TestBus()
        let d = try Tandemd(bus: bus, config: "[Server]\nTLSCertificate=/nonexistent/cert.pem\n")
        #expect(throws: TestFailure.self) { try d.start() }
        #expect(d.log().contains("TLSCertificate= and TLSKey= must be set together"), "\(d.log())")
    }
}
