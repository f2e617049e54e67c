import TandemCLI

await TandemBench.runAndExit(Array(CommandLine.arguments.dropFirst()))
