"""The `hsikit` command line (typer). A thin layer over hsikit's Python functions."""
