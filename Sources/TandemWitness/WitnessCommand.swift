import ArgumentParser
import Foundation
import Logging
import TandemSystemd

/// tandem-witness's command line.
public struct WitnessCommand: ParsableCommand {
    public static let configuration = CommandConfiguration(
        commandName: "tandem-witness",
        abstract:
            "The Tandem pair's witness: lets at most one node of a pair serve when the nodes cannot see each other.")

    @Option(help: ArgumentHelp("UDP address to listen on.", valueName: "addr")) var listen = "0.0.0.0:7392"
    @Option(help: ArgumentHelp("The pair key.", valueName: "file")) var keyFile = "/etc/tandem/pair.key"
    @Option(
        help: ArgumentHelp(
            "Where the last vote is kept (default $STATE_DIRECTORY, else /var/lib/tandem-witness).",
            valueName: "dir"))
    var stateDir: String?
    @Option(
        help: ArgumentHelp(
            "How long a vote or renewal lets a node serve, in seconds (5/6 of the nodes' FailoverTimeoutSec=).",
            valueName: "s"))
    var leaseSec = WitnessOptions().leaseSec

    public init() {}

    public func validate() throws {
        guard leaseSec > 0 else { throw ValidationError("--lease-sec needs a positive number") }
    }

    public func run() throws {
        var options = WitnessOptions()
        options.listen = listen
        options.keyFile = keyFile
        options.stateDir = stateDir
        options.leaseSec = leaseSec
        LoggingSystem.bootstrap { label in PriorityPrefixLogHandler(label: label, identifier: "tandem-witness") }
        let logger = Logger(label: "tandem-witness")
        do {
            try WitnessService(options: options, logger: logger).run()
        } catch {
            logger.critical("\(error)")
            throw ExitCode.failure
        }
    }
}
