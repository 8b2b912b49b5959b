"""Band preprocessing: bad bands, subsetting, scaling, resampling, statistics and PCA, as replayable chains."""

from hsikit.preprocess.bands import WATER_VAPOUR_WINDOWS, bad_band_indices, good_band_indices, select_by_wavelength
from hsikit.preprocess.chain import Chain, Step
from hsikit.preprocess.pca import PCAModel, streaming_pca
from hsikit.preprocess.resample import resampling_matrix
from hsikit.preprocess.sensors import SENTINEL2, get_sensor
from hsikit.preprocess.stats import BandStats, band_statistics

__all__ = [
    "WATER_VAPOUR_WINDOWS", "BandStats", "Chain", "PCAModel", "SENTINEL2", "Step", "bad_band_indices",
    "band_statistics", "get_sensor", "good_band_indices", "resampling_matrix", "select_by_wavelength",
    "streaming_pca",
]
