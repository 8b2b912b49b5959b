"""Time series of Sentinel-2 acquisitions: vegetation indices, the FFDNN photochemical filter, a crop-stress simulator.

- :mod:`hsikit.timeseries.indices`: NDVI, NDRE, GNDVI, EVI, SAVI, OSAVI, MCARI, TCARI, MCARI/OSAVI, TCARI/OSAVI,
  PSRI, CIre, WDVI, CLAIR LAI and the LCC feature, on numpy / dask / xarray; ``compute_index(name, bands)``.
- :mod:`hsikit.timeseries.filter`: cloud and non-vegetation masking, LAI/LCC features, interpolation onto a
  regular time grid and standardisation: the ``(N, F, T)`` input of the FFDNN model (``hsikit.models.ffdnn``).
- :mod:`hsikit.timeseries.simulator`: simulated Sentinel-2 L2A series of healthy, yellow-rust and
  nitrogen-deficient wheat fields (the stress model's training data; not real data).
"""
