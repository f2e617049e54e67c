import CSystemd
import Foundation
import TandemBus
import TandemBusClient
import TandemTesting
import Testing

/// Directory with the built executables (next to the test bundle).
let buildDir: String = {
    let exe = URL(fileURLWithPath: "/proc/self/exe").resolvingSymlinksInPath()
    return exe.deletingLastPathComponent().path
}()

func binary(_ name: String) -> String { buildDir + "/" + name }

struct RunResult {
    var status: Int32
    var stdout: String
    var stderr: String
}

/// Runs a command to completion.
@discardableResult
func run(_ exe: String, _ args: [String], env: [String: String] = [:], stdin: String? = nil) throws -> RunResult {
    let p = Process()
    p.executableURL = URL(fileURLWithPath: exe)
    p.arguments = args
    var environment = ProcessInfo.processInfo.environment
    for (k, v) in env { environment[k] = v }
    p.environment = environment
    let out = Pipe(), err = Pipe()
    p.standardOutput = out
    p.standardError = err
    let inPipe = Pipe()
    p.standardInput = stdin != nil ? inPipe : FileHandle.nullDevice
    try p.run()
    if let stdin {
        inPipe.fileHandleForWriting.write(Data(stdin.utf8))
        try inPipe.fileHandleForWriting.close()
    }
    // Read both pipes fully before waiting, so that large outputs cannot block the child.
    let group = DispatchGroup()
    nonisolated(unsafe) var errData = Data()
    group.enter()
    DispatchQueue.global().async {
        errData = err.fileHandleForReading.readDataToEndOfFile()
        group.leave()
    }
    let outData = out.fileHandleForReading.readDataToEndOfFile()
    group.wait()
    p.waitUntilExit()
    return RunResult(
        status: p.terminationStatus, stdout: String(decoding: outData, as: UTF8.self),
        stderr: String(decoding: errData, as: UTF8.self))
}

/// A private dbus-daemon for one test, with a system-bus-like policy open to every uid.
final class TestBus {
    let dir: String
    let address: String
    let process: Process

    static let openPolicy = """
        <policy context="default">
          <allow user="*"/>
          <allow own="*"/>
          <allow send_type="method_call"/>
          <allow send_type="signal"/>
          <allow send_requested_reply="true" send_type="method_return"/>
          <allow send_requested_reply="true" send_type="error"/>
          <allow receive_type="method_call"/>
          <allow receive_type="method_return"/>
          <allow receive_type="error"/>
          <allow receive_type="signal"/>
        </policy>
        """

    /// `policy`: the bus's `<policy>` elements (default: everything open to every uid);
    /// `include`: a policy file to add, as the system bus includes system.d/*.conf.
    init(policy: String = TestBus.openPolicy, include: String? = nil) throws {
        dir = makeTempDir("bus")
        let conf = """
            <!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
             "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
            <busconfig>
              <type>system</type>
              <listen>unix:tmpdir=\(dir)</listen>
              <auth>EXTERNAL</auth>
            \(policy)
            \(include.map { "<include>\($0)</include>" } ?? "")
            </busconfig>
            """
        try conf.write(toFile: dir + "/bus.conf", atomically: true, encoding: .utf8)
        process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/dbus-daemon")
        process.arguments = ["--nofork", "--print-address=1", "--config-file=\(dir)/bus.conf"]
        let out = Pipe()
        process.standardOutput = out
        process.standardError = FileHandle.nullDevice
        try process.run()
        var line = Data()
        let h = out.fileHandleForReading
        while true {
            let b = h.readData(ofLength: 1)
            if b.isEmpty || b == Data("\n".utf8) { break }
            line.append(b)
        }
        address = String(decoding: line, as: UTF8.self)
        guard address.hasPrefix("unix:") else { throw TestFailure("dbus-daemon did not start") }
    }

    var env: [String: String] { ["DBUS_SYSTEM_BUS_ADDRESS": address] }

    func client() throws -> BusClient { try BusClient(.address(address)) }

    deinit {
        kill(process.processIdentifier, SIGKILL)
        process.waitUntilExit()
        try? FileManager.default.removeItem(atPath: dir)
    }
}

struct TestFailure: Error, CustomStringConvertible {
    let description: String
    init(_ d: String) { description = d }
}

/// A vendor key pair and a directory of trusted keys for tandemd.
struct Vendor {
    let dir: String
    var privateKey: String { dir + "/vendor.key" }
    var keysDir: String { dir + "/keys" }

    init() throws {
        dir = makeTempDir("vendor")
        try FileManager.default.createDirectory(atPath: dir + "/keys", withIntermediateDirectories: true)
        let r = try run(
            binary("tandem-vendor"), ["keygen", "--private-key", privateKey, "--public-key", keysDir + "/vendor.pub"])
        guard r.status == 0 else { throw TestFailure("keygen failed: \(r.stderr)") }
    }

    func issue(
        to serverIds: [String], feature: String = "cad", seats: Int = 5, id: String, notAfter: String? = nil
    ) throws -> String {
        var args = [
            "issue", "--private-key", privateKey, "--product", "Test Product", "--feature", feature,
            "--seats", String(seats), "--id", id
        ]
        for s in serverIds { args += ["--server-id", s] }
        if let notAfter { args += ["--not-after", notAfter] }
        let r = try run(binary("tandem-vendor"), args)
        guard r.status == 0 else { throw TestFailure("issue failed: \(r.stderr)") }
        return r.stdout
    }
}

/// One tandemd process on a test bus.
final class Tandemd {
    let bus: TestBus
    let stateDir: String
    let configPath: String
    var process: Process?
    var logPath: String
    var extraEnv: [String: String]
    /// A network namespace to run in (`ip netns exec`).
    var netns: String?
    /// Open-file limits to start with (`prlimit`, which execs tandemd: the pid stays tandemd's).
    var fileLimit: (soft: Int, hard: Int)?

    init(bus: TestBus, config: String, stateDir: String? = nil, env: [String: String] = [:]) throws {
        self.bus = bus
        self.stateDir = stateDir ?? makeTempDir("state")
        let own = makeTempDir("tandemd")
        configPath = own + "/tandemd.conf"
        logPath = own + "/tandemd.log"
        extraEnv = env
        // Parallel tests must not fight over the default port: let the kernel pick one.
        var text = config
        if text.contains("[Server]") && !text.contains("Listen=") {
            text += (text.hasSuffix("\n") ? "" : "\n") + "[Server]\nListen=127.0.0.1:0\n"
        }
        try text.write(toFile: configPath, atomically: true, encoding: .utf8)
    }

    /// Starts tandemd and waits until it owns its name.
    func start() throws {
        let p = Process()
        let args = ["--config", configPath, "--state-dir", stateDir, "--log-level", "debug"]
        var command = [binary("tandemd")] + args
        if let fileLimit { command = ["/usr/bin/prlimit", "--nofile=\(fileLimit.soft):\(fileLimit.hard)"] + command }
        // `ip netns exec` execs tandemd in the namespace: the pid stays tandemd's.
        if let netns { command = ["/usr/sbin/ip", "netns", "exec", netns] + command }
        p.executableURL = URL(fileURLWithPath: command[0])
        p.arguments = Array(command.dropFirst())
        var environment = ProcessInfo.processInfo.environment
        environment["DBUS_SYSTEM_BUS_ADDRESS"] = bus.address
        environment["NOTIFY_SOCKET"] = nil
        environment["WATCHDOG_USEC"] = nil
        for (k, v) in extraEnv { environment[k] = v }
        p.environment = environment
        if !FileManager.default.fileExists(atPath: logPath) {
            _ = FileManager.default.createFile(atPath: logPath, contents: nil)
        }
        let logHandle = FileHandle(forWritingAtPath: logPath)!
        logHandle.seekToEndOfFile()
        p.standardOutput = logHandle
        p.standardError = logHandle
        try p.run()
        process = p
        let client = try bus.client()
        for _ in 0..<200 {
            if (try? client.call(
                destination: "org.freedesktop.DBus", path: "/org/freedesktop/DBus", interface: "org.freedesktop.DBus",
                "NameHasOwner",
                [.string(BusNames.service)]
            ).first) == .bool(true) {
                return
            }
            if !p.isRunning { throw TestFailure("tandemd exited with \(p.terminationStatus): \(log())") }
            usleep(25_000)
        }
        throw TestFailure("tandemd did not take its bus name: \(log())")
    }

    func log() -> String { (try? String(contentsOfFile: logPath, encoding: .utf8)) ?? "" }

    func signal(_ sig: Int32) { if let p = process { kill(p.processIdentifier, sig) } }

    /// Sends `sig` and waits for the exit status.
    @discardableResult
    func stop(_ sig: Int32 = SIGTERM) -> Int32 {
        guard let p = process else { return -1 }
        kill(p.processIdentifier, sig)
        p.waitUntilExit()
        process = nil
        return p.terminationReason == .uncaughtSignal ? -p.terminationStatus : p.terminationStatus
    }

    deinit {
        if let p = process, p.isRunning {
            kill(p.processIdentifier, SIGKILL)
            p.waitUntilExit()
        }
    }

    func client() throws -> BusClient { try bus.client() }

    var serverId: String { get throws { try client().get("ServerId").stringValue ?? "" } }

    /// The network API's first bound address ("127.0.0.1:PORT").
    var httpAddress: String { get throws { try client().get("ListenAddresses").arrayValue?.first?.stringValue ?? "" } }
}

/// busctl against the test bus, optionally as another uid with chosen groups (setpriv).
func busctl(_ bus: TestBus, _ args: [String], uid: Int? = nil, groups: [Int] = []) throws -> RunResult {
    if let uid {
        let groupArgs =
            groups.isEmpty ? ["--clear-groups"] : ["--groups=" + groups.map(String.init).joined(separator: ",")]
        return try run(
            "/usr/bin/setpriv", ["--reuid=\(uid)", "--regid=\(uid)"] + groupArgs + ["/usr/bin/busctl"] + args,
            env: bus.env)
    }
    return try run("/usr/bin/busctl", args, env: bus.env)
}

func managerCall(
    _ bus: TestBus, _ member: String, _ sigArgs: [String], uid: Int? = nil, groups: [Int] = []
) throws -> RunResult {
    try busctl(
        bus, ["call", BusNames.service, BusNames.rootPath, BusNames.managerInterface, member] + sigArgs, uid: uid,
        groups: groups)
}

func tandemctl(_ bus: TestBus, _ args: [String], stdin: String? = nil) throws -> RunResult {
    try run(binary("tandemctl"), args, env: bus.env, stdin: stdin)
}

/// Expects a D-Bus call to fail with `name`.
func expectBusError(_ name: String, sourceLocation: SourceLocation = #_sourceLocation, _ body: () throws -> Void) {
    do {
        try body()
        Issue.record("expected \(name), call succeeded", sourceLocation: sourceLocation)
    } catch let e as BusError {
        #expect(e.name == name, "\(e.message)", sourceLocation: sourceLocation)
    } catch {
        Issue.record("expected \(name), got \(error)", sourceLocation: sourceLocation)
    }
}

/// Everything the API shows about the stored state (refusal counters excluded).
func snapshot(_ c: BusClient) throws -> [BusValue] {
    var usage = try c.call("GetUsage")
    if let rows = usage.first?.arrayValue {
        usage = [
            .array(
                elementSignature: "(suuuut)",
                rows.map { r in
                    guard let f = r.structValue else { return r }
                    return .structure(Array(f.prefix(5)))
                })
        ]
    }
    return try c.call("ListLicenses") + c.call("ListLeases") + c.call("ListReservations") + usage + [c.get("ServerId")]
}

/// Collects signals from a bus connection.
final class SignalCollector {
    let client: BusClient
    var received: [(member: String, path: String, args: [BusValue])] = []
    private var slot: OpaquePointer?

    init(_ client: BusClient, match: String = "type='signal',sender='org.tandem.LicenseManager1'") throws {
        self.client = client
        let me = Unmanaged.passUnretained(self).toOpaque()
        let r = sd_bus_add_match(
            client.bus, &slot, match,
            { m, userdata, _ in
                let c = Unmanaged<SignalCollector>.fromOpaque(userdata!).takeUnretainedValue()
                let member = String(cString: sd_bus_message_get_member(m!))
                let path = String(cString: sd_bus_message_get_path(m!))
                c.received.append((member, path, (try? BusMessage.readAll(m!)) ?? []))
                return 0
            }, me)
        guard r >= 0 else { throw TestFailure("add match failed: \(r)") }
    }

    deinit { sd_bus_slot_unref(slot) }

    /// Processes incoming messages until `until` holds or the timeout passes.
    func pump(seconds: Double, until: () -> Bool = { false }) {
        let deadline = Date().addingTimeInterval(seconds)
        while Date() < deadline && !until() {
            if sd_bus_process(client.bus, nil) > 0 { continue }
            sd_bus_wait(client.bus, 50_000)
        }
    }
}

/// A fake systemd notification socket.
final class NotifyReceiver {
    let path: String
    let fd: Int32

    init() throws {
        path = makeTempDir("notify") + "/notify.sock"
        fd = socket(AF_UNIX, Int32(SOCK_DGRAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        var addr = sockaddr_un()
        addr.sun_family = sa_family_t(AF_UNIX)
        withUnsafeMutableBytes(of: &addr.sun_path) { buf in
            for (i, b) in path.utf8.enumerated() { buf[i] = b }
        }
        let r = withUnsafePointer(to: &addr) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                bind(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size))
            }
        }
        guard r == 0 else { throw TestFailure("bind notify socket: \(errno)") }
    }

    deinit { close(fd) }

    /// Reads datagrams for up to `seconds`, returning each one's text.
    func receive(seconds: Double, until: ([String]) -> Bool) -> [String] {
        var out: [String] = []
        let deadline = Date().addingTimeInterval(seconds)
        var buf = [UInt8](repeating: 0, count: 4096)
        while Date() < deadline && !until(out) {
            var pfd = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
            guard poll(&pfd, 1, 50) > 0 else { continue }
            let n = recv(fd, &buf, buf.count, 0)
            if n > 0 { out.append(String(decoding: buf[0..<n], as: UTF8.self)) }
        }
        return out
    }
}
