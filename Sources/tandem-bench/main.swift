import TandemCLI

TandemBench.main(Array(CommandLine.arguments.dropFirst()))
