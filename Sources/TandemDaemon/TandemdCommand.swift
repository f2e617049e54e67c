import ArgumentParser
import Foundation
import Logging
import TandemSystemd

/// tandemd's command line.
public struct TandemdCommand: ParsableCommand {
    public static let configuration = CommandConfiguration(
        commandName: "tandemd", abstract: "Tandem license server daemon.", version: "tandemd \(TandemVersion.string)")

    @Option(help: ArgumentHelp("Configuration file (drop-ins in FILE.d/*.conf).", valueName: "file"))
    var config: String?
    @Option(help: ArgumentHelp("State directory (default $STATE_DIRECTORY, else /var/lib/tandem).", valueName: "dir"))
    var stateDir: String?
    @Flag(help: "Serve on the session bus instead of the system bus.") var user = false
    @Option(
        help: ArgumentHelp("debug, info, notice, warning, error.", valueName: "level"),
        transform: { text in
            guard let level = Logger.Level(rawValue: text) else { throw ValidationError("unknown log level '\(text)'") }
            return level
        })
    var logLevel: Logger.Level = .info

    public init() {}

    /// The options the daemon runs with.
    public var options: DaemonOptions {
        var o = DaemonOptions()
        if let config {
            o.configPath = config
            o.configGiven = true
        }
        o.stateDir = stateDir
        o.userBus = user
        return o
    }

    public func run() throws {
        LogLevelControl.shared.level = logLevel
        LoggingSystem.bootstrap { label in PriorityPrefixLogHandler(label: label, identifier: "tandemd") }
        let logger = Logger(label: "tandemd")
        let status: Int32
        do {
            let daemon = try Daemon(options: options, logger: logger)
            status = try daemon.run()
            // Never released: freeing a million leases one by one takes ~0.7 s of a stop, and the
            // exit that follows returns their memory at once (run() closed the database).
            _ = Unmanaged.passRetained(daemon)
        } catch {
            logger.critical("\(error)")
            throw ExitCode.failure
        }
        if status != 0 { throw ExitCode(status) }
    }
}
