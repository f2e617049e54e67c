import TandemCore

/// A UDP socket that carries frames sealed with the pair key: what is sent is sealed, what is
/// received is opened, and frames that do not open are counted by reason instead of delivered.
/// Both ends of the pair link use it: tandemd (to its peer and the witness) and the witness.
public final class SealedSocket {
    public let socket: UDPSocket
    private var sealer: FrameSealer
    private var opener: FrameOpener
    private let clock: () -> USec
    /// Frames refused, by reason.
    public private(set) var rejected: [FrameRejection: UInt64] = [:]

    /// `clock` gives the wall-clock time that frames carry and are checked against.
    public init(key: PairKey, bind address: SocketAddress, clock: @escaping () -> USec) throws {
        sealer = FrameSealer(key: key)
        opener = FrameOpener(key: key)
        socket = try UDPSocket(bind: address)
        self.clock = clock
    }

    public var fd: Int32 { socket.fd }
    public var boundAddress: String { socket.local.description }

    public func send(_ message: LinkMessage, to address: SocketAddress) {
        socket.send(sealer.seal(message, now: clock()), to: address)
    }

    /// The next waiting frame that opens, or nil when none is left; each one refused on the way
    /// is counted and given to `refused`.
    public func receive(refused: (FrameRejection, SocketAddress) -> Void) -> (LinkMessage, SocketAddress)? {
        while let (bytes, from) = socket.receive() {
            switch opener.open(bytes, now: clock()) {
            case .success(let message): return (message, from)
            case .failure(let why):
                count(why)
                refused(why, from)
            }
        }
        return nil
    }

    /// Counts a frame that opened but is refused all the same (an epoch gone by).
    public func count(_ rejection: FrameRejection) { rejected[rejection, default: 0] += 1 }
}
