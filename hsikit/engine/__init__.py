"""Tiled inference over whole scenes with bounded memory."""
