"""The Processing provider ``hsikit``: its algorithms and its one setting, the path of the hsikit executable."""

import os

from qgis.core import QgsProcessingProvider
from qgis.PyQt.QtGui import QIcon

from .algorithms import EXECUTABLE_SETTING, algorithms

_ICON = os.path.join(os.path.dirname(__file__), "icon.svg")

try:  # the Processing plugin's settings (Options > Processing > Providers); present in QGIS and qgis_process
    from processing.core.ProcessingConfig import ProcessingConfig, Setting
except ImportError:  # pragma: no cover - Processing switched off: the executable comes from the environment or PATH
    ProcessingConfig = Setting = None


class HsikitProvider(QgsProcessingProvider):
    """Classify, Denoise, Super-resolve, Restore, Preprocess, Scene info, Stress and Batch classify, each running
    the hsikit command line."""

    def load(self) -> bool:
        if ProcessingConfig is not None:
            ProcessingConfig.settingIcons[self.name()] = self.icon()
            ProcessingConfig.addSetting(Setting(
                self.name(), EXECUTABLE_SETTING,
                self.tr("hsikit executable (empty: $HSIKIT_EXECUTABLE, else hsikit on PATH)"), "",
                valuetype=Setting.FILE))
            ProcessingConfig.readSettings()
        self.refreshAlgorithms()
        return True

    def unload(self) -> None:
        if ProcessingConfig is not None and EXECUTABLE_SETTING in ProcessingConfig.settings:
            ProcessingConfig.removeSetting(EXECUTABLE_SETTING)

    def loadAlgorithms(self) -> None:  # noqa: N802
        for alg in algorithms():
            self.addAlgorithm(alg)

    def id(self) -> str:
        return "hsikit"

    def name(self) -> str:
        return "hsikit"

    def longName(self) -> str:  # noqa: N802
        return self.tr("hsikit: hyperspectral scenes in tiles")

    def icon(self) -> QIcon:
        return QIcon(_ICON)

    def svgIconPath(self) -> str:  # noqa: N802
        return _ICON

    # hsikit writes GeoTIFFs (COGs) only: output pickers offer .tif
    def supportedOutputRasterLayerExtensions(self) -> list:  # noqa: N802
        return ["tif"]

    def defaultRasterFileExtension(self) -> str:  # noqa: N802
        return "tif"
