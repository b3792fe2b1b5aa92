"""The `ddr-search` command line: one module per subcommand, each a thin layer over one library call."""
