import Foundation
import TandemTesting

/// Kills a process's descendants (deepest first), then the process, and reaps it: cockpit-ws
/// starts cockpit-bridge, chromedriver starts Chromium, and PID 1 here reaps no orphans.
func killTree(_ process: Process) {
    guard process.isRunning else { return }
    func children(_ pid: Int32) -> [Int32] {
        let tasks = (try? FileManager.default.contentsOfDirectory(atPath: "/proc/\(pid)/task")) ?? []
        return tasks.flatMap { tid -> [Int32] in
            let text = (try? String(contentsOfFile: "/proc/\(pid)/task/\(tid)/children", encoding: .utf8)) ?? ""
            return text.split(separator: " ").compactMap { Int32($0) }
        }
    }
    func descendants(_ pid: Int32) -> [Int32] { children(pid).flatMap { descendants($0) + [$0] } }
    for pid in descendants(process.processIdentifier) { kill(pid, SIGKILL) }
    kill(process.processIdentifier, SIGKILL)
    process.waitUntilExit()
}

/// A loopback TCP port that is free now (the kernel's choice), for a server that must be told one.
func freeLoopbackPort() -> Int {
    let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
    defer { close(fd) }
    var addr = sockaddr_in()
    addr.sin_family = sa_family_t(AF_INET)
    addr.sin_addr.s_addr = inet_addr("127.0.0.1")
    var len = socklen_t(MemoryLayout<sockaddr_in>.size)
    let bound = withUnsafeMutablePointer(to: &addr) { pointer in
        pointer.withMemoryRebound(to: sockaddr.self, capacity: 1) { a in
            bind(fd, a, len) == 0 && getsockname(fd, a, &len) == 0
        }
    }
    return bound ? Int(UInt16(bigEndian: addr.sin_port)) : Int.random(in: 20_000...60_000)
}

/// Where browser tests leave their screenshots (the best go to docs/images/ for the README).
let screenshotDir: String = {
    let dir =
        ProcessInfo.processInfo.environment["TANDEM_SCREENSHOT_DIR"]
        ?? packageRoot + "/.build/screenshots"
    try? FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
    return dir
}()

/// Cockpit's own web server with a local session (no login): the package from the source tree,
/// its bridge calling D-Bus on `bus` as the uid that started it (root, or `uid` via setpriv).
final class CockpitWS {
    let port: Int
    let process = Process()
    let dataDir: String
    let logPath: String

    init(bus: TestBus, uid: UInt32? = nil) throws {
        dataDir = makeTempDir("cockpit")
        try FileManager.default.createDirectory(atPath: dataDir + "/cockpit", withIntermediateDirectories: true)
        try FileManager.default.createSymbolicLink(
            atPath: dataDir + "/cockpit/tandem", withDestinationPath: packageRoot + "/cockpit/tandem")
        logPath = dataDir + "/cockpit-ws.log"
        _ = FileManager.default.createFile(atPath: logPath, contents: nil)
        port = freeLoopbackPort()
        let ws = [
            "/usr/lib/cockpit/cockpit-ws", "--local-session=/usr/bin/cockpit-bridge", "--port", "\(port)",
            "--address", "127.0.0.1"
        ]
        var env = ProcessInfo.processInfo.environment
        // The bridge honours the system bus address; with the session bus on the same bus it
        // starts no session bus of its own to leave behind.
        env["DBUS_SYSTEM_BUS_ADDRESS"] = bus.address
        env["DBUS_SESSION_BUS_ADDRESS"] = bus.address
        env["XDG_DATA_DIRS"] = dataDir + ":/usr/share"
        if let uid {
            process.executableURL = URL(fileURLWithPath: "/usr/bin/setpriv")
            process.arguments = ["--reuid=\(uid)", "--regid=\(uid)", "--clear-groups"] + ws
            env["HOME"] = dataDir
            env["XDG_RUNTIME_DIR"] = dataDir
        } else {
            process.executableURL = URL(fileURLWithPath: ws[0])
            process.arguments = Array(ws.dropFirst())
        }
        process.environment = env
        process.standardOutput = FileHandle(forWritingAtPath: logPath)
        process.standardError = FileHandle(forWritingAtPath: logPath)
        try process.run()
        // Generous: under the whole suite's load its first page may take a while.
        try waitFor("cockpit-ws to serve the page", seconds: 30) {
            guard self.process.isRunning else { throw TestFailure("cockpit-ws exited: \(self.log())") }
            return (try? http("GET", self.pageURL))?.status == 200
        }
    }

    var pageURL: String { "http://127.0.0.1:\(port)/cockpit/@localhost/tandem/index.html" }
    func log() -> String { (try? String(contentsOfFile: logPath, encoding: .utf8)) ?? "" }

    deinit {
        killTree(process)
        try? FileManager.default.removeItem(atPath: dataDir)
    }
}

/// A headless Chromium driven over the W3C WebDriver protocol through chromedriver.
final class Browser {
    let driver = Process()
    let base: String
    let session: String
    let profile: String
    static let elementKey = "element-6066-11e4-a52e-4f735466cecf"

    init() throws {
        profile = makeTempDir("chromium")
        let port = freeLoopbackPort()
        base = "http://127.0.0.1:\(port)"
        driver.executableURL = URL(fileURLWithPath: "/usr/bin/chromedriver")
        driver.arguments = ["--port=\(port)"]
        driver.standardOutput = FileHandle.nullDevice
        driver.standardError = FileHandle.nullDevice
        try driver.run()
        let status = base + "/status"
        try waitFor("chromedriver", seconds: 10) { (try? http("GET", status))?.status == 200 }
        let options: [String: Any] = [
            "binary": "/usr/bin/chromium",
            "args": [
                "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1400,1000",
                "--user-data-dir=\(profile)"
            ]
        ]
        let capabilities: [String: Any] = ["alwaysMatch": ["browserName": "chrome", "goog:chromeOptions": options]]
        let created = try Self.command(base, "POST", "/session", ["capabilities": capabilities])
        guard let id = (created as? [String: Any])?["sessionId"] as? String else {
            throw TestFailure("chromedriver made no session: \(String(describing: created))")
        }
        session = id
    }

    /// One WebDriver command; its `value`, or the driver's error as a TestFailure.
    @discardableResult
    static func command(_ base: String, _ method: String, _ path: String, _ body: [String: Any]? = nil) throws -> Any? {
        let data = try body.map { String(decoding: try JSONSerialization.data(withJSONObject: $0), as: UTF8.self) }
        let r = try http(method, base + path, body: data ?? (method == "POST" ? "{}" : nil))
        let value = r.object["value"]
        if r.status != 200 {
            let error = value as? [String: Any]
            throw TestFailure(
                "WebDriver \(method) \(path): \(r.status) \(error?["error"] ?? "") \(error?["message"] ?? r.body)")
        }
        return value
    }

    @discardableResult
    func command(_ method: String, _ path: String, _ body: [String: Any]? = nil) throws -> Any? {
        try Self.command(base, method, "/session/\(session)" + path, body)
    }

    func open(_ url: String) throws { try command("POST", "/url", ["url": url]) }

    /// Runs `body` (a function body: `return ...`) in the page with `args`.
    @discardableResult
    func script(_ body: String, _ args: [Any] = []) throws -> Any? {
        try command("POST", "/execute/sync", ["script": body, "args": args])
    }

    func element(_ css: String) throws -> String {
        let found = try command("POST", "/element", ["using": "css selector", "value": css]) as? [String: Any]
        guard let id = found?[Self.elementKey] as? String else { throw TestFailure("no element \(css)") }
        return id
    }

    /// A real click (the driver's pointer), as a user's.
    func click(_ css: String) throws { try command("POST", "/element/\(try element(css))/click") }

    /// Types into a field; for a file input, `text` is the file's path.
    func type(_ css: String, _ text: String) throws {
        try command("POST", "/element/\(try element(css))/value", ["text": text])
    }

    func text(_ css: String) throws -> String {
        try script("const e = document.querySelector(arguments[0]); return e ? e.textContent : null;", [css]) as? String
            ?? ""
    }

    /// Polls `condition` (a JavaScript expression) until it is true.
    func wait(_ what: String, seconds: Double = 10, _ condition: String) throws {
        try waitFor(what, seconds: seconds) { try script("return Boolean(\(condition));") as? Bool == true }
    }

    func screenshot(_ name: String) {
        guard let png = try? command("GET", "/screenshot") as? String, let data = Data(base64Encoded: png) else {
            return
        }
        try? data.write(to: URL(fileURLWithPath: screenshotDir + "/\(name).png"))
    }

    deinit {
        _ = try? command("DELETE", "")
        killTree(driver)
        try? FileManager.default.removeItem(atPath: profile)
    }
}
