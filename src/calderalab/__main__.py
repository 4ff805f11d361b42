"""`python -m calderalab` runs the CLI."""

from calderalab.cli import main

main()
