from mammofuse.cli import main

main()
