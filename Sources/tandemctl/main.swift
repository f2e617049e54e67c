import TandemCLI

await Tandemctl.run(Array(CommandLine.arguments.dropFirst()))
