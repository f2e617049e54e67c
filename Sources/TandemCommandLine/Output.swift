/// What Tandem's command-line programs share: one-line failures, tables and JSON, the run loop.
import ArgumentParser
import Foundation

/// Plain tables for people, JSON for scripts.
package enum Output {
    package static func table(_ header: [String], _ rows: [[String]]) -> String {
        var widths = header.map(\.count)
        for r in rows { for (i, c) in r.enumerated() where i < widths.count { widths[i] = max(widths[i], c.count) } }
        func line(_ cells: [String]) -> String {
            cells.enumerated().map { i, c in
                i == cells.count - 1 ? c : c.padding(toLength: widths[i], withPad: " ", startingAt: 0)
            }
            .joined(separator: "  ")
        }
        return ([line(header)] + rows.map(line)).joined(separator: "\n")
    }

    /// Prints `json` as JSON when the user asked for JSON (`--json`), else `text`.
    package static func report(asJSON: Bool, json: @autoclosure () -> Any, text: @autoclosure () -> String) {
        print(asJSON ? Self.json(json()) : text())
    }

    package static func json(_ value: Any) -> String {
        guard
            let data = try? JSONSerialization.data(
                withJSONObject: value, options: [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes])
        else {
            return "null"
        }
        return String(decoding: data, as: UTF8.self)
    }

    /// "2026-11-29 17:40:00 UTC" for a µs timestamp; "never" for 0.
    package static func time(_ usec: UInt64) -> String {
        guard usec > 0 else { return "never" }
        var t = time_t(usec / 1_000_000)
        var tmv = tm()
        gmtime_r(&t, &tmv)
        var buf = [CChar](repeating: 0, count: 64)
        strftime(&buf, buf.count, "%Y-%m-%d %H:%M:%S UTC", &tmv)
        return buf.withUnsafeBufferPointer { String(cString: $0.baseAddress!) }
    }
}

extension ParsableCommand {
    /// Parses `arguments`, runs the command (async or not) and exits; a `CLIFailure` prints
    /// "NAME: reason" on one line and exits with its status.
    public static func runAndExit(_ arguments: [String]) async -> Never {
        do {
            var command = try parseAsRoot(arguments)
            if var asyncCommand = command as? AsyncParsableCommand {
                try await asyncCommand.run()
            } else {
                try command.run()
            }
            Foundation.exit(0)
        } catch let failure as CLIFailure {
            FileHandle.standardError.write(
                Data("\(configuration.commandName ?? "tandem"): \(failure.description)\n".utf8))
            Foundation.exit(failure.exitCode)
        } catch {
            exit(withError: error)
        }
    }
}

/// One-line failure on stderr and a non-zero exit.
public struct CLIFailure: Error, CustomStringConvertible {
    public let description: String
    public let exitCode: Int32
    public init(_ d: String, exitCode: Int32 = 1) {
        description = d
        self.exitCode = exitCode
    }
}
