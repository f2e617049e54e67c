import TandemBenchCommands
import TandemCommandLine

await TandemBench.runAndExit(Array(CommandLine.arguments.dropFirst()))
