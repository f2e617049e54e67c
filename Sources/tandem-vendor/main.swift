import TandemVendorCommands
import TandemCommandLine

await TandemVendor.runAndExit(Array(CommandLine.arguments.dropFirst()))
