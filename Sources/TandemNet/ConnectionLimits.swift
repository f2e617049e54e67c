import Foundation
import Logging
import NIOCore
import TandemConfig
import TandemCore

/// Counts the network API's open connections, in all and per client address. A connection
/// over either limit is closed as soon as it is accepted, before it is read: refusing costs an
/// accept and a close, and is logged once per address and minute.
final class ConnectionLimiter: @unchecked Sendable {
    let limits: ConnectionLimits
    let logger: Logger
    private let lock = NSLock()
    private var total = 0
    private var byAddress: [String: Int] = [:]
    /// Refusals are logged once a minute per address.
    private var reports = ReportThrottle(intervalUSec: 60_000_000)
    private let started = ContinuousClock.now
    private var refusedCount: UInt64 = 0

    init(limits: ConnectionLimits, logger: Logger) {
        self.limits = limits
        self.logger = logger
    }

    /// Connections refused since start.
    var refused: UInt64 { lock.withLock { refusedCount } }
    var open: Int { lock.withLock { total } }

    /// Takes a place for a connection from `address`, or says why there is none.
    func admit(_ address: String) -> String? {
        let now = UInt64((ContinuousClock.now - started) / .microseconds(1))
        let (why, unreported) = lock.withLock { () -> (String?, UInt64?) in
            let mine = byAddress[address, default: 0]
            let why =
                total >= limits.total
                ? "MaxConnections=\(limits.total) reached"
                : mine >= limits.perAddress ? "MaxConnectionsPerAddress=\(limits.perAddress) reached" : nil
            guard let why else {
                total += 1
                byAddress[address] = mine + 1
                return (nil, nil)
            }
            refusedCount += 1
            return (why, reports.report(address, now: now))
        }
        if let why, let unreported {
            logger.warning(
                "connection refused",
                metadata: ["address": "\(address)", "reason": "\(why)", "unreported_before": "\(unreported)"])
        }
        return why
    }

    func release(_ address: String) {
        lock.withLock {
            total -= 1
            let left = byAddress[address, default: 1] - 1
            byAddress[address] = left > 0 ? left : nil
        }
    }
}

/// The limiter's place in each connection's pipeline: admits the connection when it becomes
/// active (closing it when there is no room) and releases it when it closes. It passes every
/// message on untouched.
final class ConnectionLimitHandler: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = Any  // never unwrapped

    let limiter: ConnectionLimiter
    /// Decided once per connection (whichever of handlerAdded and channelActive sees it active).
    private var decided = false
    /// The address whose place this connection holds, while it holds one.
    private var address: String?

    init(limiter: ConnectionLimiter) { self.limiter = limiter }

    func handlerAdded(context: ChannelHandlerContext) {
        if context.channel.isActive { admit(context) }
    }

    func channelActive(context: ChannelHandlerContext) {
        admit(context)
        context.fireChannelActive()
    }

    private func admit(_ context: ChannelHandlerContext) {
        guard !decided else { return }
        decided = true
        let from = context.channel.remoteAddress?.ipAddress ?? "unknown"
        if limiter.admit(from) != nil {
            context.close(promise: nil)
        } else {
            address = from
        }
    }

    func channelInactive(context: ChannelHandlerContext) {
        release()
        context.fireChannelInactive()
    }

    func handlerRemoved(context: ChannelHandlerContext) { release() }

    private func release() {
        if let address { limiter.release(address) }
        address = nil
    }
}
