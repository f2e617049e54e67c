import ArgumentParser
import Foundation
import TandemCommandLine

/// `tandemctl service-account`: the tech note's "Change Network Account User" step (and the
/// utility that does it automatically), the systemd way: a unit drop-in with User=/Group=, a
/// D-Bus policy override so that the new account may own the bus name, a reload and a
/// restart. systemd hands the state directory (StateDirectory=) to the new account itself.
public struct ServiceAccountPlan: Equatable {
    public var user: String
    public var group: String
    public init(user: String, group: String) {
        self.user = user
        self.group = group
    }
    public static let dropInPath = "/etc/systemd/system/tandemd.service.d/50-service-account.conf"
    public static let policyPath = "/etc/dbus-1/system.d/org.tandem.LicenseManager1-service-account.conf"

    public var dropIn: String {
        """
        # Written by tandemctl service-account set: tandemd runs as this account.
        [Service]
        User=\(user)
        Group=\(group)

        """
    }

    public var policy: String {
        """
        <?xml version="1.0"?>
        <!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-BUS Bus Configuration 1.0//EN"
         "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
        <!-- Written by tandemctl service-account set: the service account may own the name. -->
        <busconfig>
          <policy user="\(user)">
            <allow own="org.tandem.LicenseManager1"/>
          </policy>
        </busconfig>

        """
    }

    /// Checks the account: it must exist, not be root, and (if given) the group must exist.
    public static func make(user: String, group: String?) throws -> ServiceAccountPlan {
        guard let pw = getpwnam(user) else { throw CLIFailure("no such user '\(user)'") }
        guard pw.pointee.pw_uid != 0 else { throw CLIFailure("refusing to run tandemd as root ('\(user)' has uid 0)") }
        let groupName: String
        if let group {
            guard getgrnam(group) != nil else { throw CLIFailure("no such group '\(group)'") }
            groupName = group
        } else {
            guard let gr = getgrgid(pw.pointee.pw_gid) else {
                throw CLIFailure("the primary group of '\(user)' does not exist")
            }
            groupName = String(cString: gr.pointee.gr_name)
        }
        return ServiceAccountPlan(user: user, group: groupName)
    }

    public static let polkitPolicyPath = "/usr/share/polkit-1/actions/org.tandem.LicenseManager1.policy"

    /// What changes for polkit, given the installed policy's text (nil: polkit's policy is not
    /// installed). polkitd answers a service asking about another user's call only when the
    /// action's org.freedesktop.policykit.owner annotation names the service's account; the
    /// shipped policy names `tandem`. Under another account tandemd's questions are refused and
    /// it fails closed: root still administers, other administrators are refused (logged).
    public func polkitWarning(policyText: String?) -> String? {
        guard let policyText, !policyText.contains("unix-user:\(user)") else { return nil }
        return "warning: \(Self.polkitPolicyPath) lets only the accounts it names (org.freedesktop.policykit.owner)"
            + " ask polkit about callers, and it does not name \(user): administrators other than root will be"
            + " refused until the annotation names unix-user:\(user) too"
    }

    /// Writes the drop-in and the policy override under `root` ("/" normally).
    public func write(root: String = "/") throws {
        for (path, text) in [(Self.dropInPath, dropIn), (Self.policyPath, policy)] {
            let full = (root as NSString).appendingPathComponent(path)
            try FileManager.default.createDirectory(
                atPath: (full as NSString).deletingLastPathComponent, withIntermediateDirectories: true)
            try text.write(toFile: full, atomically: true, encoding: .utf8)
        }
    }
}

func runTool(_ argv: [String]) -> (Int32, String) {
    let p = Process()
    p.executableURL = URL(fileURLWithPath: "/usr/bin/env")
    p.arguments = argv
    let out = Pipe()
    p.standardOutput = out
    p.standardError = out
    do { try p.run() } catch { return (127, "\(argv[0]): \(error.localizedDescription)") }
    let data = out.fileHandleForReading.readDataToEndOfFile()
    p.waitUntilExit()
    return (p.terminationStatus, String(decoding: data, as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines))
}

struct ServiceAccount: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "service-account", abstract: "Show or change the account tandemd runs as.",
        subcommands: [Show.self, SetAccount.self])

    struct Show: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "The configured and the running service account.")
        @OptionGroup var bus: BusOptions
        func run() throws {
            let (_, user) = runTool(["systemctl", "show", "-p", "User", "--value", "tandemd.service"])
            let (_, group) = runTool(["systemctl", "show", "-p", "Group", "--value", "tandemd.service"])
            let running = (try? bus.client().get(.serviceAccount).stringValue) ?? nil
            if bus.json {
                let out: [String: Any] = [
                    "configured_user": user, "configured_group": group, "running_as": running ?? ""
                ]
                print(Output.json(out))
            } else {
                print("Configured: User=\(user.isEmpty ? "(none)" : user) Group=\(group.isEmpty ? "(none)" : group)")
                print("Running as: \(running ?? "(tandemd is not running)")")
            }
        }
    }

    struct SetAccount: ParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "set",
            abstract: "Run tandemd as USER (root only): unit drop-in, D-Bus policy, reload, restart.")
        @OptionGroup var bus: BusOptions
        @Argument(help: "The account.") var user: String
        @Option(help: "The group (default: the account's primary group).") var group: String?

        func run() throws {
            guard geteuid() == 0 else { throw CLIFailure("only root may change the service account") }
            let plan = try ServiceAccountPlan.make(user: user, group: group)
            do { try plan.write() } catch {
                throw CLIFailure("cannot write the configuration: \(error.localizedDescription)")
            }
            print("Wrote \(ServiceAccountPlan.dropInPath) (User=\(plan.user), Group=\(plan.group))")
            print("Wrote \(ServiceAccountPlan.policyPath) (\(plan.user) may own org.tandem.LicenseManager1)")
            for step in [
                ["systemctl", "daemon-reload"],
                [
                    "busctl", "call", "org.freedesktop.DBus", "/org/freedesktop/DBus", "org.freedesktop.DBus",
                    "ReloadConfig"
                ],
                ["systemctl", "restart", "tandemd.service"]
            ] {
                let (status, out) = runTool(step)
                guard status == 0 else { throw CLIFailure("\(step.joined(separator: " ")) failed: \(out)") }
                print("Ran \(step.joined(separator: " "))")
            }
            let running = (try? bus.client().get(.serviceAccount).stringValue) ?? nil
            guard running == plan.user else {
                throw CLIFailure("tandemd restarted but runs as \(running ?? "nothing"), not \(plan.user)")
            }
            print("tandemd now runs as \(plan.user); its state directory was handed over by systemd (StateDirectory=)")
            let policy = try? String(contentsOfFile: ServiceAccountPlan.polkitPolicyPath, encoding: .utf8)
            if let warning = plan.polkitWarning(policyText: policy) {
                FileHandle.standardError.write(Data("\(warning)\n".utf8))
            }
        }
    }
}
