from tfstorage.cli.main import main

main()
