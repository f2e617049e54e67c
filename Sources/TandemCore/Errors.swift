/// Every refusal Tandem can give. The case name is the D-Bus error's last component
/// (`org.tandem.LicenseManager1.<Name>`) and the problem type of the network API.
public enum TandemErrorCode: String, Sendable, CaseIterable, Codable {
    case invalidLicense = "InvalidLicense"
    case wrongServer = "WrongServer"
    case licenseExpired = "LicenseExpired"
    case licenseAlreadyActive = "LicenseAlreadyActive"
    case licenseNotFound = "LicenseNotFound"
    case unknownFeature = "UnknownFeature"
    case insufficientSeats = "InsufficientSeats"
    /// The site's usage policy refuses the acquisition; the message quotes the rule and where
    /// it is written.
    case policyDenied = "PolicyDenied"
    case leaseNotFound = "LeaseNotFound"
    case reservationNotFound = "ReservationNotFound"
    case licensesActive = "LicensesActive"
    case licenseInUse = "LicenseInUse"
    /// Removing the license would leave fewer seats than its feature's reservations promise
    /// (or than use and reservations together need); also ResetServerId while reservations stand.
    case seatsReserved = "SeatsReserved"
    /// This node of a pair is not serving now (the message names the node that is, if known).
    case notServing = "NotServing"
    /// An administrative change on the backup of a pair; the message names the primary.
    case notPrimary = "NotPrimary"
    /// The backup's License Server ID had activations; it needs ResetServerId first.
    case serverIdUsed = "ServerIdUsed"
    /// The backup was not prepared (PrepareBackup) for this primary.
    case peerNotPrepared = "PeerNotPrepared"
    /// The peer did not answer on the pair link.
    case peerUnreachable = "PeerUnreachable"
    /// The call does not fit the node's pair state (e.g. DisableBackup on a standalone
    /// server, ResetServerId while paired).
    case pairState = "PairState"
    /// Maps to org.freedesktop.DBus.Error.InvalidArgs.
    case invalidArgs = "InvalidArgs"
    /// Maps to org.freedesktop.DBus.Error.AccessDenied.
    case accessDenied = "AccessDenied"
    /// An internal failure (storage); maps to org.freedesktop.DBus.Error.Failed.
    case failed = "Failed"
    /// polkit would allow it after an authentication the caller did not allow to wait for
    /// (`busctl --allow-interactive-authorization=yes`); maps to the D-Bus error of that name.
    case interactiveAuthorizationRequired = "InteractiveAuthorizationRequired"

    public static let domain = "org.tandem.LicenseManager1"

    /// The full D-Bus error name.
    public var dbusName: String {
        switch self {
        case .invalidArgs: return "org.freedesktop.DBus.Error.InvalidArgs"
        case .accessDenied: return "org.freedesktop.DBus.Error.AccessDenied"
        case .failed: return "org.freedesktop.DBus.Error.Failed"
        case .interactiveAuthorizationRequired: return "org.freedesktop.DBus.Error.InteractiveAuthorizationRequired"
        default: return "\(Self.domain).\(rawValue)"
        }
    }

    public init?(dbusName: String) {
        for code in Self.allCases where code.dbusName == dbusName { self = code; return }
        return nil
    }
}

public struct TandemError: Error, Sendable, Equatable, CustomStringConvertible {
    public var code: TandemErrorCode
    public var message: String
    /// With `notServing`: the network address of the node that serves, when known.
    public var servingAddress: String?
    /// With `policyDenied`: which kind of rule refused (the history's and the metrics' reason).
    public var policyReason: DenialReason?
    public init(_ code: TandemErrorCode, _ message: String) {
        self.code = code
        self.message = message
    }
    public var description: String { "\(code.rawValue): \(message)" }

    /// The refusal of `action` to a caller who is not an administrator.
    public static func needsAdministrator(_ action: String) -> TandemError {
        TandemError(
            .accessDenied, "\(action) needs an administrator (root, polkit's yes, or without polkit the admin group)")
    }
}
