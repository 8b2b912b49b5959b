"""Checks made inside QGIS's own Python (the system ``/usr/bin/python3`` with ``qgis.core``), for
tests/test_qgis_provider.py; prints one JSON object. Not a pytest module: QGIS's Python is not hsikit's venv.

    python3 qgis_check.py layer RASTER
        load RASTER (and the .qml beside it) and describe it: valid, renderer, palette labels, CRS.
    python3 qgis_check.py process PLUGINS_DIR SCENE MODEL OUTDIR
        register the plugin's provider with Processing and run hsikit:classify twice: once loading its result into
        the project (as the desktop does), once cancelled at its first progress report.
"""

import json
import os
import sys

from qgis.core import QgsApplication, QgsProcessingException, QgsProcessingFeedback, QgsProject, QgsRasterLayer
from qgis.PyQt.QtCore import QCoreApplication


def describe(layer) -> dict:
    renderer = layer.renderer()
    info = {"valid": layer.isValid(), "renderer": renderer.type() if renderer else None,
            "crs": layer.crs().authid(), "width": layer.width(), "height": layer.height(),
            "bands": layer.bandCount(), "source": layer.source()}
    if renderer is not None and renderer.type() == "paletted":
        classes = renderer.classes()
        info["labels"] = [c.label for c in classes]
        info["values"] = [int(c.value) for c in classes]
        info["colours"] = [c.color.name() for c in classes]
    return info


def check_layer(path: str) -> dict:
    layer = QgsRasterLayer(path, os.path.basename(path), "gdal")
    qml = os.path.splitext(path)[0] + ".qml"
    message, ok = layer.loadNamedStyle(qml) if os.path.isfile(qml) else ("no .qml beside the raster", False)
    return dict(describe(layer), style_loaded=ok, style_message=message)


class Recorder(QgsProcessingFeedback):
    """Keeps what the algorithm reported; with ``cancel_at_progress`` it cancels at the first progress report."""

    def __init__(self, cancel_at_progress: bool = False) -> None:
        super().__init__()
        self.errors, self.infos, self.progress = [], [], []
        self.cancel_at_progress = cancel_at_progress
        self.progressChanged.connect(self._on_progress)

    def _on_progress(self, value: float) -> None:
        self.progress.append(value)
        if self.cancel_at_progress and 0 < value < 100:
            self.cancel()

    def reportError(self, error: str, fatalError: bool = False) -> None:  # noqa: N802, N803
        self.errors.append(error)

    def pushInfo(self, info: str) -> None:  # noqa: N802
        self.infos.append(info)


def check_processing(plugins: str, scene: str, model: str, outdir: str) -> dict:
    sys.path[:0] = ["/usr/share/qgis/python/plugins", plugins]
    import processing
    from processing.core.Processing import Processing

    Processing.initialize()
    from hsikit_qgis.provider import HsikitProvider

    provider = HsikitProvider()
    QgsApplication.processingRegistry().addProvider(provider)
    report = {"algorithms": sorted(a.id() for a in provider.algorithms()),
              "parameters": {a.id(): [p.name() for p in a.parameterDefinitions()] for a in provider.algorithms()}}

    loaded_path = os.path.join(outdir, "loaded.tif")
    feedback = Recorder()
    results = processing.runAndLoadResults("hsikit:classify", {"INPUT": scene, "MODEL": model, "TILE": 152,
                                                              "OUTPUT": loaded_path}, feedback=feedback)
    layers = [lyr for lyr in QgsProject.instance().mapLayers().values() if lyr.source() == loaded_path]
    report["loaded"] = {"results": {k: str(v) for k, v in results.items()}, "layers": [describe(x) for x in layers],
                        "progress": feedback.progress, "log": feedback.infos}

    cancel_path = os.path.join(outdir, "cancelled.tif")
    feedback = Recorder(cancel_at_progress=True)
    try:
        processing.run("hsikit:classify", {"INPUT": scene, "MODEL": model, "TILE": 152, "OUTPUT": cancel_path},
                       feedback=feedback)
        error = None
    except QgsProcessingException as exc:
        error = str(exc)
    report["cancelled"] = {"exception": error, "errors": feedback.errors, "progress": feedback.progress,
                           "files": sorted(f for f in os.listdir(outdir) if not f.startswith("loaded"))}
    return report


def main(argv: list) -> int:
    # QGIS's own names, so that QgsSettings reads the profile in QGIS_CUSTOM_CONFIG_PATH (the provider's setting)
    QCoreApplication.setOrganizationName("QGIS")
    QCoreApplication.setOrganizationDomain("qgis.org")
    QCoreApplication.setApplicationName("QGIS3")
    app = QgsApplication([], False)
    app.initQgis()
    if argv[0] == "layer":
        report = check_layer(argv[1])
    else:
        report = check_processing(*argv[1:5])
    print(json.dumps(report))
    app.exitQgis()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
