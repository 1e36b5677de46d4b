"""One module per ``gigaseg`` subcommand: ``HELP``, ``add_arguments(parser)``, ``main(args)``."""
