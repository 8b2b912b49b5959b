"""CLI commands (stress); filled in by its own issue work."""
