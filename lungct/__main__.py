from lungct.cli import main

main()
