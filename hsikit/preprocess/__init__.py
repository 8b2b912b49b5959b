"""Band preprocessing: bad bands, subsetting, scaling, resampling, statistics and PCA, as replayable chains."""
