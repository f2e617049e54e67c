import TandemctlCommands
import TandemCommandLine

await Tandemctl.runAndExit(Array(CommandLine.arguments.dropFirst()))
