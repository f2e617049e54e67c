import TandemCLI

await Tandemctl.runAndExit(Array(CommandLine.arguments.dropFirst()))
