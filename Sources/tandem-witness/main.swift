import Foundation
import Logging
import TandemWitness

let usage = """
    Usage: tandem-witness [--listen ADDR] [--key-file FILE] [--state-dir DIR] [--lease-sec S]

    The Tandem pair's witness: lets at most one node of a pair serve when the nodes cannot
    see each other.

      --listen ADDR     UDP address to listen on (default 0.0.0.0:7392)
      --key-file FILE   the pair key (default /etc/tandem/pair.key)
      --state-dir DIR   where the last vote is kept (default $STATE_DIRECTORY, else /var/lib/tandem-witness)
      --lease-sec S     how long a vote or renewal lets a node serve (default 2.5)
    """

var options = WitnessOptions()
var args = Array(CommandLine.arguments.dropFirst())
func fail(_ s: String) -> Never {
    FileHandle.standardError.write(Data("tandem-witness: \(s)\n".utf8))
    exit(2)
}
while !args.isEmpty {
    let a = args.removeFirst()
    func value() -> String {
        guard !args.isEmpty else { fail("\(a) needs a value") }
        return args.removeFirst()
    }
    switch a {
    case "--listen": options.listen = value()
    case "--key-file": options.keyFile = value()
    case "--state-dir": options.stateDir = value()
    case "--lease-sec":
        guard let v = Double(value()), v > 0 else { fail("--lease-sec needs a positive number") }
        options.leaseSec = v
    case "-h", "--help": print(usage); exit(0)
    default: fail("unknown argument '\(a)' (see --help)")
    }
}
LoggingSystem.bootstrap { label in
    var h = StreamLogHandler.standardError(label: label)
    h.logLevel = .info
    return h
}
let logger = Logger(label: "tandem-witness")
do {
    try WitnessService(options: options, logger: logger).run()
} catch {
    fail("\(error)")
}
