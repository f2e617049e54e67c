import ArgumentParser
import Foundation
import TandemCommandLine
import TandemConfig
import TandemCore

/// `tandemctl policy`: the usage policy file, checked and explained without asking tandemd.
struct PolicyCmd: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "policy", abstract: "Check the usage policy (policy.conf) and explain what it allows.",
        subcommands: [Check.self, Explain.self])

    /// The policy as tandemd would read it: a file named on the command line must exist; the
    /// default one may be missing (its drop-ins alone, or no policy).
    static func load(_ path: String?) throws -> UsagePolicy {
        do { return try PolicyFile.load(path: path ?? PolicyFile.defaultPath, required: path != nil) } catch {
            throw CLIFailure(error.description)
        }
    }

    struct Check: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Validate a policy file and its policy.d drop-ins (exit 1 with FILE:LINE: reason).")
        @Argument(help: "The policy file (default: \(PolicyFile.defaultPath)).") var file: String?
        func run() throws {
            let p = try PolicyCmd.load(file)
            let file = file ?? PolicyFile.defaultPath
            let rules = p.features.values.reduce(0) {
                $0 + $1.reserve.count + $1.max.count + $1.include.count + $1.exclude.count
            }
            print(
                "\(file): valid; \(p.features.count) feature(s), \(rules) rule(s), \(p.groups.count) group(s),"
                    + " \(p.hostGroups.count) host group(s)" + (p.isOpen ? "" : "; digest \(p.digest.prefix(12))"))
        }
    }

    struct Explain: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Say which rules of the policy apply to a request for FEATURE, and what they allow.")
        @Argument(help: "The feature asked for.") var feature: String
        @Option(help: "The user name the product gives.") var user: String?
        @Option(help: "The host name the product gives.") var host: String?
        @Option(help: "The client id.") var client = "-"
        @Option(help: "The policy file (default: \(PolicyFile.defaultPath)).") var policy: String?
        @Flag(help: "Print JSON.") var json = false

        func run() throws {
            let p = try PolicyCmd.load(policy)
            let who = PolicyHolder(user: user, host: host, client: client)
            let lines = p.explain(feature: feature, for: who)
            if json {
                print(Output.json(["feature": feature, "verdict": lines.verdict, "rules": lines.rules]))
            } else {
                print("\(feature): \(lines.verdict)")
                for r in lines.rules { print("  \(r)") }
            }
        }
    }
}
