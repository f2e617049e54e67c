import Foundation
import Logging
import TandemCore
import TandemSystemd
import TandemPeer

/// The pair link: one UDP socket carrying frames sealed with the pair key to the peer and the
/// witness, and the requests that wait for an answer (probes, pairing) with their timeouts.
/// It runs on the event-loop thread.
final class PairLink {
    let socket: SealedSocket
    private let clock: () -> USec
    private let logger: Logger
    /// Requests waiting for their answer, by nonce.
    private var waiting: [UInt64: (deadline: USec, handler: (LinkMessage?) -> Void)] = [:]

    static let answerTimeoutUSec: USec = 2_000_000

    init(keyFile: String, listen: SocketAddress, clock: @escaping () -> USec, logger: Logger) throws {
        try SecretFile.check(keyFile, setting: "KeyFile")
        let key: PairKey
        do { key = try PairKey.load(path: keyFile) } catch { throw ServiceError("KeyFile=\(keyFile): \(error)") }
        socket = try SealedSocket(key: key, bind: listen, clock: clock, logger: logger, refusalLevel: .warning)
        self.clock = clock
        self.logger = logger
    }

    var boundAddress: String { socket.boundAddress }
    /// Frames refused, by reason (RejectedFrames).
    var rejected: [FrameRejection: UInt64] { socket.rejected }

    func send(_ message: LinkMessage, to address: SocketAddress) { socket.send(message, to: address) }

    /// Sends `message` and calls `done` with the answer, or nil after the timeout.
    func ask(_ make: (UInt64) -> LinkMessage, to address: SocketAddress, done: @escaping (LinkMessage?) -> Void) {
        let nonce = UInt64.random(in: 1...UInt64.max)
        waiting[nonce] = (clock() + Self.answerTimeoutUSec, done)
        send(make(nonce), to: address)
    }

    /// Reads the frames waiting on the socket (up to `SealedSocket.readsPerWakeup`): answers go
    /// to their requests, other messages to `deliver`; frames that do not open are counted, and
    /// logged at most once a minute per sender.
    func drain(_ deliver: (LinkMessage, SocketAddress) -> Void) {
        for (m, from) in socket.waitingFrames() {
            switch m {
            case .probeReply(let nonce, _), .pairReply(let nonce, _, _, _), .unpairReply(let nonce):
                waiting.removeValue(forKey: nonce)?.handler(m)
            default:
                deliver(m, from)
            }
        }
    }

    /// Gives up on the requests whose answer is overdue.
    func expireRequests() {
        let t = clock()
        for (nonce, w) in waiting where t >= w.deadline {
            waiting[nonce] = nil
            w.handler(nil)
        }
    }

    func count(_ rejection: FrameRejection) { socket.count(rejection) }
}
