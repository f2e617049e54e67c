import TandemCLI

await TandemVendor.runAndExit(Array(CommandLine.arguments.dropFirst()))
