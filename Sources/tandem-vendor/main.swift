import TandemCLI

TandemVendor.run(Array(CommandLine.arguments.dropFirst()))
