import Foundation
import Logging
import TandemDaemon

let parsed: DaemonOptions.Parsed
do {
    parsed = try DaemonOptions.parse(Array(CommandLine.arguments.dropFirst()))
} catch {
    FileHandle.standardError.write(Data("tandemd: \(error)\n".utf8))
    exit(2)
}
switch parsed {
case .exit(let text):
    print(text)
case .run(let options, let level):
    LogLevelControl.shared.level = level
    LoggingSystem.bootstrap { label in PriorityPrefixLogHandler(label: label) }
    let logger = Logger(label: "tandemd")
    do {
        exit(try Daemon(options: options, logger: logger).run())
    } catch {
        logger.critical("\(error)")
        exit(1)
    }
}
