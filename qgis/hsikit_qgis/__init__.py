"""hsikit's QGIS plugin: a Processing provider (id ``hsikit``) that runs the hsikit command line.

QGIS calls :func:`classFactory`; the desktop then calls ``initGui`` and ``qgis_process`` calls ``initProcessing``.
"""


def classFactory(iface):  # noqa: N802 - the name QGIS looks for
    """The plugin object QGIS keeps while the plugin is enabled."""
    return HsikitPlugin(iface)


class HsikitPlugin:
    """Registers the hsikit Processing provider, and removes it when the plugin is unloaded."""

    def __init__(self, iface) -> None:
        self.iface = iface
        self.provider = None

    def initProcessing(self) -> None:  # noqa: N802
        """Add the provider to the Processing registry (once)."""
        from qgis.core import QgsApplication

        from .provider import HsikitProvider

        if self.provider is None:
            self.provider = HsikitProvider()
            QgsApplication.processingRegistry().addProvider(self.provider)

    def initGui(self) -> None:  # noqa: N802
        self.initProcessing()

    def unload(self) -> None:
        from qgis.core import QgsApplication

        if self.provider is not None:
            QgsApplication.processingRegistry().removeProvider(self.provider)
            self.provider = None
