"""The `codeio-jax` subcommands, by group (cli.py puts them together)."""
