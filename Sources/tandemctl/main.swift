import TandemCLI

Tandemctl.run(Array(CommandLine.arguments.dropFirst()))
