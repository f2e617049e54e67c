import Foundation
import TandemCore

/// A resolved UDP address (`host[:port]`, IPv4, `[IPv6]`, or a name).
public struct SocketAddress: Sendable, Equatable, CustomStringConvertible {
    public var storage: sockaddr_storage
    public var length: socklen_t

    public init(storage: sockaddr_storage, length: socklen_t) {
        self.storage = storage
        self.length = length
    }

    /// Resolves `text` (`host`, `host:port`, `[v6]:port`), using `defaultPort` when it has none.
    public init(resolving text: String, defaultPort: Int) throws(PairKeyError) {
        let s = text.trimmingCharacters(in: .whitespaces)
        var host = s
        var port = defaultPort
        if s.hasPrefix("[") {
            guard let close = s.firstIndex(of: "]") else { throw PairKeyError("bad address \(quoted(text))") }
            host = String(s[s.index(after: s.startIndex)..<close])
            let rest = s[s.index(after: close)...]
            if rest.hasPrefix(":") {
                guard let p = Int(rest.dropFirst()) else { throw PairKeyError("bad port in \(quoted(text))") }
                port = p
            } else if !rest.isEmpty {
                throw PairKeyError("bad address \(quoted(text))")
            }
        } else if s.filter({ $0 == ":" }).count == 1, let colon = s.firstIndex(of: ":") {
            host = String(s[..<colon])
            guard let p = Int(s[s.index(after: colon)...]) else { throw PairKeyError("bad port in \(quoted(text))") }
            port = p
        }
        guard !host.isEmpty, (0...65535).contains(port) else { throw PairKeyError("bad address \(quoted(text))") }
        var hints = addrinfo()
        hints.ai_socktype = Int32(SOCK_DGRAM.rawValue)
        hints.ai_flags = AI_NUMERICSERV
        var res: UnsafeMutablePointer<addrinfo>?
        let r = getaddrinfo(host, String(port), &hints, &res)
        guard r == 0, let res, let ai = res.pointee.ai_addr else {
            throw PairKeyError("cannot resolve \(quoted(host)): \(String(cString: gai_strerror(r)))")
        }
        defer { freeaddrinfo(res) }
        var st = sockaddr_storage()
        withUnsafeMutableBytes(of: &st) { dst in
            dst.copyMemory(from: UnsafeRawBufferPointer(start: ai, count: Int(res.pointee.ai_addrlen)))
        }
        self.init(storage: st, length: res.pointee.ai_addrlen)
    }

    public var family: Int32 { Int32(storage.ss_family) }

    public var port: Int {
        withUnsafeBytes(of: storage) { raw in
            family == AF_INET6
                ? Int(
                    UInt16(
                        bigEndian: raw.load(
                            fromByteOffset: MemoryLayout<sockaddr_in6>.offset(of: \.sin6_port)!, as: UInt16.self)))
                : Int(
                    UInt16(
                        bigEndian: raw.load(
                            fromByteOffset: MemoryLayout<sockaddr_in>.offset(of: \.sin_port)!, as: UInt16.self)))
        }
    }

    public var description: String {
        var host = [CChar](repeating: 0, count: Int(NI_MAXHOST))
        var st = storage
        let r = withUnsafePointer(to: &st) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                getnameinfo($0, length, &host, socklen_t(host.count), nil, 0, NI_NUMERICHOST)
            }
        }
        let h = r == 0 ? String(decoding: host.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self) : "?"
        return family == AF_INET6 ? "[\(h)]:\(port)" : "\(h):\(port)"
    }

    public static func == (a: SocketAddress, b: SocketAddress) -> Bool {
        guard a.family == b.family else { return false }
        let n = Int(a.family == AF_INET6 ? MemoryLayout<sockaddr_in6>.size : MemoryLayout<sockaddr_in>.size)
        var x = a.storage, y = b.storage
        if a.family == AF_INET6 {
            // Compare port and address; ignore flow info.
            return withUnsafeBytes(of: &x) { xb in
                withUnsafeBytes(of: &y) { yb in
                    let pOff = MemoryLayout<sockaddr_in6>.offset(of: \.sin6_port)!
                    let aOff = MemoryLayout<sockaddr_in6>.offset(of: \.sin6_addr)!
                    return xb[pOff..<pOff + 2].elementsEqual(yb[pOff..<pOff + 2])
                        && xb[aOff..<aOff + 16].elementsEqual(yb[aOff..<aOff + 16])
                        && xb[n - 4..<n].elementsEqual(yb[n - 4..<n])
                }
            }
        }
        return withUnsafeBytes(of: &x) { xb in withUnsafeBytes(of: &y) { yb in xb[0..<8].elementsEqual(yb[0..<8]) } }
    }
}

/// A non-blocking UDP socket.
public final class UDPSocket {
    public let fd: Int32
    public let local: SocketAddress

    public init(bind address: SocketAddress) throws(PairKeyError) {
        let fd = socket(
            address.family, Int32(SOCK_DGRAM.rawValue) | Int32(SOCK_NONBLOCK.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0
        )
        guard fd >= 0 else { throw PairKeyError("socket: \(String(cString: strerror(errno)))") }
        // No SO_REUSEADDR: for UDP it would let another socket share the port and take frames.
        // Large buffers: a standby that is briefly starved of CPU should not drop a burst of
        // frames (the kernel caps these at net.core.rmem_max / wmem_max).
        var size: Int32 = 4 << 20
        setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &size, socklen_t(MemoryLayout<Int32>.size))
        setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &size, socklen_t(MemoryLayout<Int32>.size))
        if address.family == AF_INET6 {
            var zero: Int32 = 0
            setsockopt(fd, Int32(IPPROTO_IPV6), IPV6_V6ONLY, &zero, socklen_t(MemoryLayout<Int32>.size))
        }
        var st = address.storage
        let r = withUnsafePointer(to: &st) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { Glibc.bind(fd, $0, address.length) }
        }
        guard r == 0 else {
            let e = String(cString: strerror(errno))
            close(fd)
            throw PairKeyError("cannot bind \(address): \(e)")
        }
        var bound = sockaddr_storage()
        var len = socklen_t(MemoryLayout<sockaddr_storage>.size)
        _ = withUnsafeMutablePointer(to: &bound) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &len) }
        }
        self.fd = fd
        local = SocketAddress(storage: bound, length: len)
    }

    deinit { close(fd) }

    /// Sends one datagram; failures (unreachable networks, full buffers) are the protocol's
    /// business (it retries), so they are only reported.
    @discardableResult
    public func send(_ bytes: [UInt8], to address: SocketAddress) -> Bool {
        var st = address.storage
        let n = withUnsafePointer(to: &st) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                sendto(fd, bytes, bytes.count, Int32(MSG_NOSIGNAL), $0, address.length)
            }
        }
        return n == bytes.count
    }

    /// The next waiting datagram, or nil when there is none.
    public func receive() -> (bytes: [UInt8], from: SocketAddress)? {
        var buf = [UInt8](repeating: 0, count: 65_536)
        var st = sockaddr_storage()
        var len = socklen_t(MemoryLayout<sockaddr_storage>.size)
        let n = withUnsafeMutablePointer(to: &st) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { recvfrom(fd, &buf, buf.count, 0, $0, &len) }
        }
        guard n >= 0 else { return nil }
        return (Array(buf[0..<n]), SocketAddress(storage: st, length: len))
    }
}
