"""Time series of Sentinel-2 acquisitions: vegetation indices, the FFDNN photochemical filter, a crop-stress simulator."""
