"""The `alpo` command line (Typer). Thin: every command calls the `alpo` library."""
