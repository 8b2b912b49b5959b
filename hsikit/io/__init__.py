"""Geo-raster input and output."""
