"""CLI commands (sentinel2); filled in by its own issue work."""
