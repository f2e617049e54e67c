/// One entry of the change log: the change at position `seq`, decided in `epoch`. The same type
/// is stored (`Store`), replicated (`PairMessage.append`) and announced after a commit.
public struct LogEntry: Sendable, Equatable, Codable {
    public var seq: UInt64
    public var epoch: UInt64
    public var change: Change
    public init(seq: UInt64, epoch: UInt64, change: Change) {
        self.seq = seq
        self.epoch = epoch
        self.change = change
    }
}
