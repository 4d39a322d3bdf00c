"""One module per subcommand: parse arguments, call the core function, render through gha."""
