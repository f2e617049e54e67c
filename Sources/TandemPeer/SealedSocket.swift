import Dispatch
import Logging
import TandemCore

/// A UDP socket that carries frames sealed with the pair key: what is sent is sealed, what is
/// received is opened, and frames that do not open are counted by reason instead of delivered.
/// Both ends of the pair link use it: tandemd (to its peer and the witness) and the witness.
public final class SealedSocket {
    public let socket: UDPSocket
    private var sealer: FrameSealer
    private var opener: FrameOpener
    private let clock: () -> USec
    private let logger: Logger
    private let refusalLevel: Logger.Level
    /// Frames refused, by reason.
    public private(set) var rejected: [FrameRejection: UInt64] = [:]

    /// `clock` gives the wall-clock time that frames carry and are checked against; refused
    /// frames are logged at `refusalLevel` (see `reportIntervalUSec`).
    public init(
        key: PairKey, bind address: SocketAddress, clock: @escaping () -> USec, logger: Logger,
        refusalLevel: Logger.Level
    ) throws {
        sealer = FrameSealer(key: key)
        opener = FrameOpener(key: key)
        socket = try UDPSocket(bind: address)
        self.clock = clock
        self.logger = logger
        self.refusalLevel = refusalLevel
    }

    public var fd: Int32 { socket.fd }
    public var boundAddress: String { socket.local.description }

    public func send(_ message: LinkMessage, to address: SocketAddress) {
        socket.send(sealer.seal(message, now: clock()), to: address)
    }

    /// Datagrams read per turn of the event loop at most: a flood on the pair port cannot hold
    /// the loop (the bus, the timers, the watchdog). The socket stays readable and is read on.
    public static let readsPerWakeup = 256
    /// A refused frame is reported at most once per sending address in this interval; the
    /// others are counted (`rejected`) and summed into the next report.
    public static let reportIntervalUSec: USec = 60 * usecPerSecond
    private var reports = ReportThrottle(intervalUSec: reportIntervalUSec)

    /// The frames waiting that open, as one turn of the event loop reads them: at most
    /// `readsPerWakeup` datagrams. Each one refused on the way is counted, and logged with how
    /// many from the same address went unlogged since, at most once per address and
    /// `reportIntervalUSec`.
    public func waitingFrames() -> WaitingFrames { WaitingFrames(socket: self) }

    public struct WaitingFrames: Sequence, IteratorProtocol {
        let socket: SealedSocket
        var budget = SealedSocket.readsPerWakeup
        public mutating func next() -> (LinkMessage, SocketAddress)? { socket.receive(within: &budget) }
    }

    private func receive(within budget: inout Int) -> (LinkMessage, SocketAddress)? {
        while budget > 0, let (bytes, from) = socket.receive() {
            budget -= 1
            let now = clock()
            switch opener.open(bytes, now: now) {
            case .success(let message): return (message, from)
            case .failure(let why):
                count(why)
                let uptimeUSec = DispatchTime.now().uptimeNanoseconds / 1000
                guard let unreported = reports.report(from.description, now: uptimeUSec) else { continue }
                logger.log(
                    level: refusalLevel, "pair frame rejected",
                    metadata: ["from": "\(from)", "reason": "\(why.rawValue)", "unreported_before": "\(unreported)"])
            }
        }
        return nil
    }

    /// Counts a frame that opened but is refused all the same (an epoch gone by).
    public func count(_ rejection: FrameRejection) { rejected[rejection, default: 0] += 1 }
}
