from memstore.cli.app import main

main()
