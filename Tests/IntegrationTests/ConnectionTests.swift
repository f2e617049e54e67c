import Foundation
import TandemBusClient
import TandemCommandLine
import TandemTesting
import Testing

/// A TCP connection to `host:port` from `source` (loopback addresses only), or -1.
func connectTCP(_ host: String, _ port: Int, from source: String? = nil) -> Int32 {
    func address(_ ip: String, _ port: Int) -> sockaddr_in {
        var a = sockaddr_in()
        a.sin_family = sa_family_t(AF_INET)
        a.sin_port = in_port_t(UInt16(port).bigEndian)
        inet_pton(AF_INET, ip, &a.sin_addr)
        return a
    }
    let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
    guard fd >= 0 else { return -1 }
    func call(_ a: sockaddr_in, _ f: (Int32, UnsafePointer<sockaddr>, socklen_t) -> Int32) -> Int32 {
        var a = a
        return withUnsafePointer(to: &a) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                f(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size))
            }
        }
    }
    if let source, call(address(source, 0), { bind($0, $1, $2) }) != 0 {
        close(fd)
        return -1
    }
    guard call(address(host, port), { connect($0, $1, $2) }) == 0 else {
        close(fd)
        return -1
    }
    return fd
}

/// What arrives on `fd` within `seconds` ("" at end of file or when nothing came).
func readSome(_ fd: Int32, seconds: Double) -> (text: String, closed: Bool) {
    var p = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
    guard poll(&p, 1, Int32(seconds * 1000)) == 1 else { return ("", false) }
    var buf = [UInt8](repeating: 0, count: 4096)
    let n = recv(fd, &buf, buf.count, Int32(MSG_DONTWAIT))
    return n > 0 ? (String(decoding: buf[..<n], as: UTF8.self), false) : ("", n == 0)
}

/// Holds TCP connections for a test, in a child process: thousands of descriptors in the test
/// process itself would break Foundation's `Process.run` for the tests beside it (it crashes
/// with descriptors above 1024). The script raises its open-files limit, connects in bursts the
/// accept queue takes, and answers on stdout, one JSON object per step, while the test goes on.
let connectionHolder = #"""
    import json, resource, select, socket, sys, time
    host, port, count, idle = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4])
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    def say(**fields):
        print(json.dumps(fields), flush=True)
    def read(s, seconds):
        # What arrived within `seconds`: None when nothing did, b"" when the server closed.
        p = select.poll()
        p.register(s, select.POLLIN | select.POLLHUP)
        if not p.poll(seconds * 1000):
            return None
        try:
            return s.recv(4096, socket.MSG_DONTWAIT)
        except (ConnectionResetError, BlockingIOError):
            return b""
    socks, started = [], time.time()
    for i in range(count):
        socks.append(socket.create_connection((host, port)))
        if i % 250 == 249:
            time.sleep(0.05)
    connected = time.time()
    # Until the server has accepted (and closed those over its limit) all that wait in its queue.
    held, before = socks, -1
    while len(held) != before and time.time() < connected + 10:
        before = len(held)
        time.sleep(0.5)
        held = [s for s in held if read(s, 0) is None]
    say(connected=len(socks), held=len(held), seconds=round(connected - started, 2))
    head = b"POST /v1/leases HTTP/1.1\r\nHost: x\r\n"
    announce = lambda n: head + b"Content-Type: application/json\r\nContent-Length: " + n + b"\r\n\r\n"
    for s in held[0:50]:
        s.send(head)
    for s in held[50:75]:
        s.send(announce(b"99999999999"))
    for s in held[75:100]:
        s.send(announce(b"1000"))
    say(ready=True)
    sys.stdin.readline()
    too_large, timed_out = read(held[50], 1) or b"", read(held[75], 4) or b""
    say(too_large=too_large[:12].decode(), timed_out=timed_out[:12].decode())
    # Idle timers start when the server accepts, which may lag the connect: wait some more.
    rest = held[:50] + held[100:]
    time.sleep(max(0, connected + idle - time.time()))
    while rest and time.time() < connected + idle + 15:
        rest = [s for s in rest if read(s, 0) is None]
        time.sleep(0.5)
    say(open_after_idle=len(rest))
    """#

@Suite(.serialized) struct ConnectionExhaustion {
    /// The attack of issue 15: thousands of connections from one address, idle or sending their
    /// requests slowly. tandemd holds what `MaxConnectionsPerAddress=` allows, closes the rest
    /// at once, times the slow ones out, stays near idle, and a product from another address
    /// still acquires within a second while D-Bus answers.
    @Test func thousandsOfIdleAndHalfSentConnectionsLockNobodyOut() throws {
        let f = try Fixture(extraConfig: "IdleTimeoutSec=15\nRequestTimeoutSec=2\nMaxConnectionsPerAddress=2500\n")
        let pid = try #require(f.daemon.process?.processIdentifier)
        let address = try f.daemon.httpAddress
        let port = address.split(separator: ":").last.map(String.init) ?? ""
        let holder = Process()
        holder.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        holder.arguments = ["python3", "-c", connectionHolder, "127.0.0.1", port, "3000", "15"]
        let (output, input) = (Pipe(), Pipe())
        holder.standardOutput = output
        holder.standardInput = input
        try holder.run()
        defer {
            if holder.isRunning { holder.terminate() }
            holder.waitUntilExit()
        }
        var pending = Data()
        func step() throws -> [String: Any] {
            while !pending.contains(UInt8(ascii: "\n")) {
                let more = output.fileHandleForReading.availableData
                guard !more.isEmpty else { throw TestFailure("the connection holder stopped") }
                pending += more
            }
            let line = pending.prefix { $0 != UInt8(ascii: "\n") }
            pending = pending.dropFirst(line.count + 1)
            return try JSONSerialization.jsonObject(with: line) as? [String: Any] ?? [:]
        }
        // Those over MaxConnectionsPerAddress= were closed at once.
        let opened = try step()
        #expect(opened["connected"] as? Int == 3000, "\(opened)")
        let held = opened["held"] as? Int ?? 0
        #expect(held >= 2500 && held <= 2520, "connections held: \(opened)")
        // The Manager counts them (NetworkConnections).
        let counts = try f.bus.client().get("NetworkConnections").dictValue ?? [:]
        #expect(counts["open"]?.uint64Value == 2500, "\(counts)")
        #expect((counts["refused"]?.uint64Value ?? 0) >= UInt64(3000 - held), "\(counts)")
        _ = try step()  // half-sent requests are out

        let cpuBefore = ProcessTimes.cpuSeconds(pid)
        let started = Date()
        let product = try run(
            "/usr/bin/curl",
            [
                "-s", "-o", "/dev/null", "-w", "%{http_code} %{time_total}", "--max-time", "5", "--interface",
                "127.0.0.2", "-X",
                "POST", "-H", "Content-Type: application/json", "--data-binary", #"{"feature":"cad","client":"new"}"#,
                "http://\(address)/v1/leases"
            ])
        // curl's own time, from its connect to the answer (its start-up is not the server's).
        let (code, took) = (product.stdout.prefix(3), Double(product.stdout.dropFirst(4)) ?? 99)
        #expect(code == "201", "a new product from another address: \(product.stdout) \(product.stderr)")
        #expect(took < 1.0, "the new product waited \(took) s")
        #expect(try f.bus.client().call("GetUsage").isEmpty == false, "D-Bus answers")
        // The announced-too-large bodies are refused before they are read, the missing ones time
        // out after RequestTimeoutSec=.
        input.fileHandleForWriting.write(Data("go\n".utf8))
        let answers = try step()
        #expect((answers["too_large"] as? String)?.hasPrefix("HTTP/1.1 413") == true, "\(answers)")
        #expect((answers["timed_out"] as? String)?.hasPrefix("HTTP/1.1 408") == true, "\(answers)")
        let busy = (ProcessTimes.cpuSeconds(pid) - cpuBefore) / Date().timeIntervalSince(started)
        #expect(busy < 0.2, "tandemd used \(busy * 100)% of a core while \(held) connections were held")
        // The figures, for the record (the issue asks for them in the note).
        print(
            "connection exhaustion: \(held) of 3000 connections held from one address,"
                + " a new product acquired in \(took) s, tandemd at \(Int(busy * 1000)) per mille of a core")
        // Idle connections and the never-ending heads are closed after IdleTimeoutSec=.
        let idle = try step()
        #expect(idle["open_after_idle"] as? Int == 0, "\(idle)")
        let log = f.daemon.log()
        #expect(log.components(separatedBy: "connection refused").count - 1 == 1, "refusals are logged once a minute")
        #expect(try f.bus.client().call("GetUsage").isEmpty == false)
    }
}
