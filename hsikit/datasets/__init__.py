"""Benchmark hyperspectral datasets: catalogue, offline lookup and verified download.

::

    from hsikit import datasets
    datasets.download("indian_pines")             # once; checksum-verified, atomic
    scene, labels = datasets.load("indian_pines")  # offline from then on

Indian Pines, Pavia University, Pavia Centre, Salinas, KSC, Botswana and Houston 2013 (manual download).
"""

from hsikit.datasets.catalog import (
    DATA_ENV,
    DATASETS,
    Dataset,
    Loaded,
    RemoteFile,
    dataset_dir,
    default_data_dir,
    find_files,
    get,
    load,
    locate,
    resolve_data_dir,
    status,
)
from hsikit.datasets.download import (
    MIRROR_ENV,
    DownloadError,
    DownloadResult,
    FileResult,
    download,
    file_digest,
    file_url,
    mirror_url,
)

__all__ = [
    "DATASETS", "DATA_ENV", "Dataset", "DownloadError", "DownloadResult", "FileResult", "Loaded", "MIRROR_ENV",
    "RemoteFile", "dataset_dir", "default_data_dir", "download", "file_digest", "file_url", "find_files", "get",
    "load", "locate", "mirror_url", "resolve_data_dir", "status",
]
