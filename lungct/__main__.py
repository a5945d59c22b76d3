from lungct.cli import run

run()
