"""`python -m emailsync.cli`: the same as the `emailsync` console script."""

from emailsync.cli import main

main()
