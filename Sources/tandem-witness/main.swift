import TandemWitness

WitnessCommand.main()
