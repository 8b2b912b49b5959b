"""CLI commands (batch); filled in by its own issue work."""
