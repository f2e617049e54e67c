import TandemDaemon

TandemdCommand.main()
