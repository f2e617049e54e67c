import ArgumentParser
import Foundation
import TandemBusClient
import TandemCommandLine
import TandemCore
import TandemPair
import TandemPeer

struct BusOptions: ParsableArguments {
    @Flag(name: .long, help: "Talk to tandemd on the session bus instead of the system bus.")
    var user = false
    @Flag(name: .long, help: "Print JSON instead of a table.")
    var json = false

    func client() throws -> BusClient {
        do { return try BusClient(user ? .user : .system) } catch { throw CLIFailure(error.message) }
    }

    /// Calls a Manager method, turning a D-Bus error into a one-line failure.
    func call(_ method: ManagerMethod, _ args: [BusValue] = []) throws -> [BusValue] {
        let c = try client()
        do { return try c.call(method.rawValue, args) } catch { throw CLIFailure(describe(error)) }
    }

    /// The rows a list method returns.
    func rows<Row: BusRow>(_ method: ManagerMethod, as: Row.Type) throws -> [Row] {
        let reply = try call(method)
        do { return try Row.rows(reply) } catch { throw CLIFailure(describe(error)) }
    }

    func describe(_ e: BusError) -> String {
        let short = e.name.split(separator: ".").last.map(String.init) ?? e.name
        if e.name.hasPrefix("System.Error") { return e.message }
        if e.name == "org.freedesktop.DBus.Error.ServiceUnknown" {
            return "tandemd is not running on this bus (\(e.message))"
        }
        return "\(short): \(e.message)"
    }
}

func s(_ v: BusValue) -> String { v.stringValue ?? "" }
func n(_ v: BusValue) -> UInt64 { v.uint64Value ?? 0 }

public struct Tandemctl: ParsableCommand {
    public static let configuration = CommandConfiguration(
        commandName: "tandemctl",
        abstract: "Control the Tandem license server over D-Bus.",
        subcommands: [
            Status.self, LicenseCmd.self, Acquire.self, Renew.self, Release.self, Leases.self,
            Reserve.self, Unreserve.self, Reservations.self, QueueCmd.self, Borrows.self, RevokeBorrow.self,
            Usage.self, Report.self, Sessions.self,
            Denials.self,
            ResetServerId.self, ClientCmd.self,
            ServiceAccount.self, PairCmd.self, PolicyCmd.self, Audit.self
        ])
    public init() {}

}

struct Status: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Show the server's identity, role, pair status and seats.")
    @OptionGroup var bus: BusOptions
    func run() throws {
        let props: [String: BusValue]
        do { props = try bus.client().getAll() } catch let e as BusError { throw CLIFailure(bus.describe(e)) }
        let keys: [ManagerProperty] = [
            .serverId, .version, .role, .pairStatus, .serving, .epoch, .peerAddress, .peerServerId,
            .peerStatus, .replicatedSeq, .witnessAddress, .witnessStatus, .partitionPolicy,
            .serviceAccount, .licenseCount, .seatsInUse, .seatsTotal, .policyDigest, .policyMismatch
        ]
        if bus.json {
            var out: [String: Any] = [:]
            for k in keys {
                guard let v = props[k.rawValue] else { continue }
                if case .bool(let b) = v {
                    out[k.rawValue] = b
                } else {
                    out[k.rawValue] = v.stringValue ?? (v.uint64Value.map { $0 as Any } ?? "")
                }
            }
            print(Output.json(out))
            return
        }
        func p(_ k: ManagerProperty) -> String {
            guard let v = props[k.rawValue] else { return "?" }
            if case .bool(let b) = v { return b ? "yes" : "no" }
            return v.stringValue ?? String(v.uint64Value ?? 0)
        }
        let digest = p(.policyDigest)
        let policy = digest.isEmpty || digest == "?" ? "none" : "digest \(digest.prefix(12))"
        guard p(.role) != PairRole.standalone.rawValue else {
            print(
                """
                License Server ID: \(p(.serverId))
                           Status: running
                             Role: \(p(.role))
                      Pair Status: \(p(.pairStatus))
                          Serving: \(p(.serving))
                            Epoch: \(p(.epoch))
                         Licenses: \(p(.licenseCount))
                            Seats: \(p(.seatsInUse))/\(p(.seatsTotal)) in use
                     Usage policy: \(policy)
                  Service account: \(p(.serviceAccount))
                          Version: \(p(.version))
                """)
            return
        }
        // A pair: this server and its peer side by side, like the tech note's server tiles.
        let peer = (try? bus.call(.getPeerStatus).first?.dictValue) ?? nil ?? [:]
        func q(_ k: PeerStatusField) -> String {
            guard let v = peer[k.rawValue] else { return "-" }
            if case .bool(let b) = v { return b ? "yes" : "no" }
            return v.stringValue ?? String(v.uint64Value ?? 0)
        }
        var peerStatus = q(.status)
        if peerStatus != "running", let at = peer[PeerStatusField.reportedUSec.rawValue]?.uint64Value {
            let ago = Int64(Date().timeIntervalSince1970) - Int64(at / 1_000_000)
            peerStatus += " (last report \(ago) s ago)"
        }
        // Why the peer is not running: what it said as it went, or how long it has been silent.
        let why = peer[PeerStatusField.statusReason.rawValue]?.stringValue.map { [("", "", $0)] } ?? []
        let rows: [(String, String, String)] =
            [
                ("", "this server", "peer"),
                ("Address", "(local)", q(.address)),
                ("License Server ID", p(.serverId), q(.serverId)),
                ("Status", "running", peerStatus)
            ] + why + [
                ("Role", p(.role), q(.role)),
                ("Pair Status", p(.pairStatus), q(.pairStatus)),
                ("Serving", p(.serving), q(.serving)),
                ("Epoch", p(.epoch), q(.epoch))
            ]
        let w0 = rows.map(\.0.count).max()!, w1 = max(rows.map(\.1.count).max()!, 12)
        for r in rows {
            print(
                r.0.padding(toLength: w0, withPad: " ", startingAt: 0) + "  "
                    + r.1.padding(toLength: w1, withPad: " ", startingAt: 0) + "  " + r.2)
        }
        let witness =
            p(.witnessAddress).isEmpty
            ? "none (PartitionPolicy \(p(.partitionPolicy)))" : "\(p(.witnessAddress)), \(p(.witnessStatus))"
        print(
            """

                   Replicated seq: \(p(.replicatedSeq))
                          Witness: \(witness)
                         Licenses: \(p(.licenseCount))
                            Seats: \(p(.seatsInUse))/\(p(.seatsTotal)) in use
                     Usage policy: \(policy)\(p(.policyMismatch) == "yes"
                        ? " — DIFFERS from the peer's: administrative changes are refused until both are the same" : "")
                  Service account: \(p(.serviceAccount))
                          Version: \(p(.version))
            """)
    }
}

struct LicenseCmd: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "license", abstract: "Activation request, activate, deactivate and list licenses.",
        subcommands: [Request.self, Activate.self, Deactivate.self, List.self])

    struct Request: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Print the activation request to send to the vendor.")
        @OptionGroup var bus: BusOptions
        func run() throws {
            let r = try bus.call(.getActivationRequest)
            if bus.json {
                print(Output.json(["request": s(r[0])]))
            } else {
                Swift.print(s(r[0]), terminator: "")
            }
        }
    }

    struct Activate: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Activate the signed license in FILE ('-' for stdin).")
        @OptionGroup var bus: BusOptions
        @Argument(help: "License file.") var file: String
        func run() throws {
            let text: String
            if file == "-" {
                text = String(decoding: FileHandle.standardInput.readDataToEndOfFile(), as: UTF8.self)
            } else {
                guard let t = try? String(contentsOfFile: file, encoding: .utf8) else {
                    throw CLIFailure("cannot read \(file)")
                }
                text = t
            }
            let r = try bus.call(.activateLicense, [.string(text)])
            Output.report(
                asJSON: bus.json, json: ["license_id": s(r[0]), "path": s(r[1])],
                text: "Activated \(s(r[0])) (\(s(r[1])))")
        }
    }

    struct Deactivate: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Deactivate an active license.")
        @OptionGroup var bus: BusOptions
        @Argument(help: "License id.") var id: String
        func run() throws {
            _ = try bus.call(.deactivateLicense, [.string(id)])
            Output.report(asJSON: bus.json, json: ["license_id": id, "deactivated": true], text: "Deactivated \(id)")
        }
    }

    struct List: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "List active licenses.")
        @OptionGroup var bus: BusOptions
        func run() throws {
            let list = try bus.rows(.listLicenses, as: LicenseRow.self)
            if bus.json {
                print(
                    Output.json(
                        list.map { r in
                            [
                                "license_id": r.id, "product": r.product, "feature": r.feature, "seats": r.seats,
                                "in_use": r.inUse, "reserved": r.reserved, "not_after_usec": r.notAfterUSec
                            ] as [String: Any]
                        }))
            } else {
                print(
                    Output.table(
                        ["LICENSE", "PRODUCT", "FEATURE", "SEATS", "IN USE", "RESERVED", "NOT AFTER"],
                        list.map { r in
                            [
                                r.id, r.product, r.feature, String(r.seats), String(r.inUse), String(r.reserved),
                                Output.time(r.notAfterUSec)
                            ]
                        }))
            }
        }
    }
}

struct Acquire: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Acquire seats of FEATURE (a lease).")
    @OptionGroup var bus: BusOptions
    @Argument(help: "Feature name.") var feature: String
    @Option(help: "Number of seats.") var count: UInt32 = 1
    @Option(help: "Client id (default: user@host).") var client: String?
    @Option(help: "Lease time in seconds (default: the server's DefaultLeaseSec).") var ttl: UInt64?
    @Option(help: "Request id: a retry with the same id returns the same lease.") var requestId: String?
    func run() throws {
        var opts: [(String, BusValue)] = []
        if let ttl { opts.append(("ttl_usec", .uint64(ttl * 1_000_000))) }
        if let requestId { opts.append(("request_id", .string(requestId))) }
        let clientId =
            client
            ?? "\(ProcessInfo.processInfo.environment["USER"] ?? "uid\(getuid())")@\(ProcessInfo.processInfo.hostName)"
        let r = try bus.call(.acquire, [.string(feature), .uint32(count), .string(clientId), .vardict(opts)])
        if bus.json {
            print(
                Output.json(
                    [
                        "lease_id": s(r[0]), "expires_usec": n(r[1]), "feature": feature, "count": count,
                        "client": clientId
                    ] as [String: Any]))
        } else {
            print("Lease \(s(r[0])): \(count) seat\(count == 1 ? "" : "s") of \(feature) until \(Output.time(n(r[1])))")
        }
    }
}

struct Renew: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Renew a lease for another lease time.")
    @OptionGroup var bus: BusOptions
    @Argument(help: "Lease id.") var id: String
    func run() throws {
        let r = try bus.call(.renew, [.string(id)])
        Output.report(
            asJSON: bus.json, json: ["lease_id": id, "expires_usec": n(r[0])] as [String: Any],
            text: "Lease \(id) renewed until \(Output.time(n(r[0])))")
    }
}

struct Release: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Release a lease and free its seats.")
    @OptionGroup var bus: BusOptions
    @Argument(help: "Lease id.") var id: String
    func run() throws {
        _ = try bus.call(.release, [.string(id)])
        Output.report(asJSON: bus.json, json: ["lease_id": id, "released": true], text: "Released \(id)")
    }
}

struct QueueCmd: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "queue", abstract: "List the acquisitions waiting for a seat, per feature in queue order.")
    @OptionGroup var bus: BusOptions
    func run() throws {
        let list = try bus.rows(.listQueue, as: QueueRow.self)
        let now = UInt64(Date().timeIntervalSince1970 * 1e6)
        if bus.json {
            print(
                Output.json(
                    list.map {
                        [
                            "feature": $0.feature, "position": $0.position, "client": $0.client, "count": $0.count,
                            "user": $0.user, "host": $0.host, "since_usec": $0.sinceUSec, "until_usec": $0.untilUSec
                        ] as [String: Any]
                    }))
        } else if list.isEmpty {
            print("No acquisition is waiting for a seat.")
        } else {
            print(
                Output.table(
                    ["FEATURE", "#", "CLIENT", "COUNT", "WAITING", "LEFT", "USER", "HOST"],
                    list.map { r in
                        [
                            r.feature, String(r.position), r.client, String(r.count),
                            "\((now - min(now, r.sinceUSec)) / 1_000_000) s",
                            "\((r.untilUSec - min(r.untilUSec, now)) / 1_000_000) s",
                            HistoryFormat.cell(r.user), HistoryFormat.cell(r.host)
                        ]
                    }))
        }
    }
}

struct Leases: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "List active leases and who holds them.")
    @OptionGroup var bus: BusOptions
    func run() throws {
        let list = try bus.rows(.listLeaseHolders, as: LeaseHolderRow.self)
        if bus.json {
            print(
                Output.json(
                    list.map { r -> [String: Any] in
                        var o: [String: Any] = [
                            "lease_id": r.id, "feature": r.feature, "client": r.client, "count": r.count,
                            "acquired_usec": r.acquiredUSec, "expires_usec": r.expiresUSec, "user": r.user,
                            "host": r.host, "token": r.token
                        ]
                        if r.uid != AuditRow.noUid { o["uid"] = r.uid }
                        return o
                    }))
        } else {
            // USER and HOST last, so that the columns before them stay where they were.
            print(
                Output.table(
                    ["LEASE", "FEATURE", "CLIENT", "COUNT", "ACQUIRED", "EXPIRES", "USER", "HOST"],
                    list.map { r in
                        [
                            r.id, r.feature, r.client, String(r.count), Output.time(r.acquiredUSec),
                            Output.time(r.expiresUSec), HistoryFormat.who(user: r.user, token: r.token, uid: r.uid),
                            HistoryFormat.cell(r.host)
                        ]
                    }))
        }
    }
}

struct Reserve: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Reserve seats of FEATURE for one holder (client id).")
    @OptionGroup var bus: BusOptions
    @Argument(help: "Feature name.") var feature: String
    @Option(help: "Number of seats.") var count: UInt32
    @Option(help: "Client id that may use the reserved seats.") var holder: String
    func run() throws {
        let r = try bus.call(.reserve, [.string(feature), .uint32(count), .string(holder)])
        Output.report(
            asJSON: bus.json, json: ["reservation_id": s(r[0])],
            text: "Reservation \(s(r[0])): \(count) seat\(count == 1 ? "" : "s") of \(feature) for \(holder)")
    }
}

struct Unreserve: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Remove a reservation.")
    @OptionGroup var bus: BusOptions
    @Argument(help: "Reservation id.") var id: String
    func run() throws {
        _ = try bus.call(.unreserve, [.string(id)])
        Output.report(
            asJSON: bus.json, json: ["reservation_id": id, "removed": true], text: "Removed reservation \(id)")
    }
}

struct Reservations: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "List reservations.")
    @OptionGroup var bus: BusOptions
    func run() throws {
        let list = try bus.rows(.listReservations, as: ReservationRow.self)
        if bus.json {
            print(
                Output.json(
                    list.map { r in
                        ["reservation_id": r.id, "feature": r.feature, "holder": r.holder, "count": r.count]
                            as [String: Any]
                    }))
        } else {
            print(
                Output.table(
                    ["RESERVATION", "FEATURE", "HOLDER", "COUNT"],
                    list.map { r in [r.id, r.feature, r.holder, String(r.count)] }))
        }
    }
}

struct Usage: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Seats, use, reservations and refusals per feature; 'usage history FEATURE' for the past.",
        subcommands: [Show.self, UsageHistoryCmd.self], defaultSubcommand: Show.self)

    /// `tandemctl usage` (and `tandemctl usage --json`) without a subcommand.
    struct Show: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Seats, use, reservations and refusals per feature (the default).")
        @OptionGroup var bus: BusOptions
        func run() throws {
            let list = try bus.rows(.getUsage, as: UsageRow.self)
            if bus.json {
                print(
                    Output.json(
                        list.map { r in
                            [
                                "feature": r.feature, "seats": r.seats, "in_use": r.inUse, "reserved": r.reserved,
                                "available": r.available,
                                "denied": r.denied
                            ] as [String: Any]
                        }))
            } else {
                print(
                    Output.table(
                        ["FEATURE", "SEATS", "IN USE", "RESERVED", "AVAILABLE", "DENIED"],
                        list.map { r in
                            [
                                r.feature, String(r.seats), String(r.inUse), String(r.reserved), String(r.available),
                                String(r.denied)
                            ]
                        }))
            }
        }
    }
}

struct ResetServerId: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "reset-server-id", abstract: "Give this server a new License Server ID (no license may be active)."
    )
    @OptionGroup var bus: BusOptions
    func run() throws {
        let r = try bus.call(.resetServerId)
        if bus.json { print(Output.json(["server_id": s(r[0])])) } else { print("New License Server ID: \(s(r[0]))") }
    }
}

struct PairCmd: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "pair", abstract: "Form, inspect and dissolve a redundant pair.",
        subcommands: [Keygen.self, PrepareBackup.self, EnableBackup.self, DisableBackup.self, Sync.self])

    struct Keygen: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Create the pair key (mode 0600); copy it to both nodes and the witness and point KeyFile= at it."
        )
        @Argument(help: "The key file to create (it must not exist).") var file: String
        func run() throws {
            do { try PairKey.generate().write(path: file) } catch { throw CLIFailure(error.description) }
            print("wrote pair key \(file)")
        }
    }

    struct PrepareBackup: ParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "prepare-backup",
            abstract: "On the backup: test the link to the primary and accept it as this node's primary.")
        @OptionGroup var bus: BusOptions
        @Option(name: .long, help: "The primary's pair link address, HOST[:PORT] (default port 7391).") var primary:
            String
        func run() throws {
            _ = try bus.call(.prepareBackup, [.string(primary)])
            print(
                "prepared as backup of \(primary); now run 'tandemctl pair enable-backup --backup ADDRESS' on "
                    + "the primary"
            )
        }
    }

    struct EnableBackup: ParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "enable-backup", abstract: "On the primary: form the pair with a prepared backup.")
        @OptionGroup var bus: BusOptions
        @Option(name: .long, help: "The backup's pair link address, HOST[:PORT] (default port 7391).") var backup:
            String
        func run() throws {
            _ = try bus.call(.enableBackup, [.string(backup)])
            print("paired with the backup at \(backup)")
        }
    }

    struct Sync: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "On the serving node: send the standby a full snapshot (clears pair-not-synced).")
        @OptionGroup var bus: BusOptions
        func run() throws {
            _ = try bus.call(.sync)
            print("snapshot on its way to the standby; watch PairStatus (tandemctl status)")
        }
    }

    struct DisableBackup: ParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "disable-backup", abstract: "Dissolve the pair (refused while licenses are activated).")
        @OptionGroup var bus: BusOptions
        func run() throws {
            _ = try bus.call(.disableBackup)
            print("pair dissolved")
        }
    }
}
