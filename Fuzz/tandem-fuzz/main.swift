import CTandemFuzz
import Foundation

// tandem-fuzz: coverage-guided fuzzing (libFuzzer) of the parsers that read outside input.
//   tandem-fuzz list                  the targets
//   tandem-fuzz seeds DIR             write each target's seed inputs to DIR/TARGET/
//   tandem-fuzz TARGET [FLAGS] [DIRS|FILES]   libFuzzer's own command line, for that target
//                                             (TANDEM_FUZZ_TARGET=TARGET tandem-fuzz FLAGS... too)
// Built only with TANDEM_FUZZ=1 (see Package.swift and scripts/fuzz).

/// The target libFuzzer's callback drives: chosen once, before the loop starts.
nonisolated(unsafe) var selected: FuzzTarget?

let callback: @convention(c) (UnsafePointer<UInt8>?, Int) -> CInt = { data, size in
    let input = data.map { Array(UnsafeBufferPointer(start: $0, count: size)) } ?? []
    selected?.run(input)
    return 0
}

func usage() -> Never {
    var text = "usage: tandem-fuzz list | seeds DIR | TARGET [libFuzzer flags and corpus]\ntargets:\n"
    for t in FuzzTargets.all { text += "  \(t.name.padding(toLength: 10, withPad: " ", startingAt: 0)) \(t.what)\n" }
    FileHandle.standardError.write(Data(text.utf8))
    exit(2)
}

let arguments = CommandLine.arguments
guard arguments.count >= 2 else { usage() }
switch arguments[1] {
case "list":
    for t in FuzzTargets.all { print(t.name) }
case "seeds":
    guard arguments.count == 3 else { usage() }
    for t in FuzzTargets.all {
        let dir = arguments[2] + "/" + t.name
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        for (i, seed) in t.seeds().enumerated() {
            // Every seed must pass its own target: a seed that traps is a broken target.
            t.run(seed)
            _ = FileManager.default.createFile(atPath: dir + "/seed-\(i + 1)", contents: Data(seed))
        }
    }
default:
    // libFuzzer runs itself again for -merge, -fork and -jobs, with its own flags only: the
    // target travels in the environment to those runs.
    let inherited = ProcessInfo.processInfo.environment["TANDEM_FUZZ_TARGET"].flatMap(FuzzTargets.named)
    let named = FuzzTargets.named(arguments[1])
    guard let target = named ?? inherited else { usage() }
    selected = target
    setenv("TANDEM_FUZZ_TARGET", target.name, 1)
    // libFuzzer reads its flags from argv; it must not see the target's name.
    let flags = named == nil ? Array(arguments.dropFirst()) : Array(arguments.dropFirst(2))
    var argv: [UnsafeMutablePointer<CChar>?] = ([arguments[0]] + flags).map { strdup($0) } + [nil]
    var argc = CInt(argv.count - 1)
    let status = argv.withUnsafeMutableBufferPointer { buffer in
        var base = buffer.baseAddress
        return LLVMFuzzerRunDriver(&argc, &base, callback)
    }
    exit(status)
}
