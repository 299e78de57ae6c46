"""`python -m bulksms.cli`: the same as the `bulksms` command."""

from bulksms.cli.main import main

main()
