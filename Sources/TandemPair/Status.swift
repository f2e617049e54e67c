/// What a server is in a pair: its configured role, kept in the store. Which node serves is
/// a separate matter (`PairNode.isServing`): a backup serves after a failover.
public enum PairRole: String, Sendable, Equatable, CustomStringConvertible {
    case standalone, primary, backup

    /// The role of pair node `index` (node 0 is the primary).
    public init(node index: NodeIndex) { self = index == 0 ? .primary : .backup }

    /// The pair node this role is (nil: not paired).
    public var node: NodeIndex? {
        switch self {
        case .standalone: return nil
        case .primary: return 0
        case .backup: return 1
        }
    }

    public var description: String { rawValue }
}

/// How the pair stands, as the tech note names it.
public enum PairStatus: String, Sendable, Equatable {
    case unpaired
    case pairedAndAvailable = "paired-and-available"
    case primaryNotAvailable = "primary-not-available"
    case backupNotAvailable = "backup-not-available"
    case recovering
    case pairNotSynced = "pair-not-synced"
}

/// How this node sees its peer, as the tech note names it: `running` (heard within
/// FailoverTimeoutSec=), `stopped` (it said it was stopping), `disconnected` (silence), and
/// `notAvailable` (never heard since this node started, or it said it was being uninstalled).
public enum PeerStatus: String, Sendable, Equatable {
    case running, stopped, disconnected
    case notAvailable = "not-available"
}

/// What a peer said as it went.
public enum PeerDeparture: String, Sendable, Equatable {
    /// Its service stopped (systemctl stop, SIGTERM).
    case stopped
    /// It is being uninstalled: it leaves the pair for good.
    case removed
}

extension PairStatus: CustomStringConvertible {
    public var description: String { rawValue }
}
