"""CLI commands (foundation); filled in by its own issue work."""
