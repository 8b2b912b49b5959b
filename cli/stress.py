"""Crop-stress commands: stress, train stress, simulate-stress (FFDNN on Sentinel-2 time series).

Imported by :mod:`hsikit.cli.main` once its app exists; heavy libraries load inside the commands.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from hsikit.cli.app import app, train_app
from hsikit.cli.options import (ALLOW_RESAMPLE_HELP, CHECKPOINT_OUT, RASTER_OUT, SET_METAVAR, command_line, exists,
                                model_config, positive, run_options)
from hsikit.cli.specs import spec_options
from hsikit.cli.state import state
from hsikit.pipelines.options import STRESS, STRESS_SEASON_HELP
from hsikit.training.run import RunOptions

_SERIES_HELP = ("The Sentinel-2 series: per-date GeoTIFFs (band descriptions B03, B04, ...; date in the "
                "ACQUISITION_DATE tag or YYYYMMDD in the file name; SCL band or <stem>_SCL.tif sibling), SAFE "
                "folders, a folder of them, or an eo-learn EOPatch folder.")


@app.command("stress")
@spec_options(STRESS)
def stress(
    series: list[Path] = typer.Argument(..., callback=exists, help=_SERIES_HELP),
    out: Path = typer.Option(..., "-o", "--out", callback=RASTER_OUT, help="Class map to write (.tif; uint8, 0 = nodata / cloudy all season / not vegetation)."),
    options: dict = None,
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace existing outputs."),
) -> None:
    """Map healthy / yellow rust / nitrogen deficiency (the model's classes) per pixel from a time series."""
    from hsikit.io.atomic import check_output

    check_output(out, overwrite)  # the pipeline checks every output too, but only once the model has loaded
    from hsikit.pipelines.stress import stress as run

    if options.get("fields") is not None:
        options["fields"] = str(options["fields"])
    res = run([str(s) for s in series], out=out, **options, overwrite=overwrite, progress=state["progress"],
              command=command_line())
    typer.echo(f"wrote {res.class_map} (+ {res.qml.name}, {res.lengths.name}): {res.pixels} px in "
               f"{res.seconds:.1f} s ({res.pixels / 1e6 / max(res.seconds, 1e-9):.3f} Mpx/s), "
               f"{len(res.grid)} grid dates from {res.grid[0]}")
    for extra in (res.field_map, res.date_map, res.explanation, res.explanation_png, res.png):
        if extra:
            typer.echo(f"wrote {extra}")
    counts = ", ".join(f"{k} {v}" for k, v in res.class_counts.items() if v)
    typer.echo(f"pixels per class: {counts}")


@train_app.command("stress")
@run_options
def train_stress(
    series: list[Path] = typer.Argument(..., callback=exists, help=_SERIES_HELP),
    labels: Path = typer.Option(..., "--labels", "-l", callback=exists, help="Class raster on the series grid (0 = unlabelled), or polygons with a class attribute."),
    out: Path = typer.Option(..., "-o", "--out", callback=CHECKPOINT_OUT, help="Checkpoint to write (.safetensors, filter settings and statistics inside)."),
    fields: Optional[Path] = typer.Option(None, "--fields", callback=exists, help="Field-id raster; the split is by field (default: each connected region of one class is a field)."),
    attribute: Optional[str] = typer.Option(None, "--attribute", help="Class column of vector labels."),
    allow_resample: bool = typer.Option(False, "--allow-resample", help=ALLOW_RESAMPLE_HELP),
    features: str = typer.Option("lai,lcc", "--features", help="Filter features per date, comma-separated: lai (WDVI/CLAIR), lcc (-ln TCARI/OSAVI), any index (hsikit indices) or a series variable such as NDVI."),
    season_start: Optional[str] = typer.Option(None, "--season-start", help=STRESS_SEASON_HELP + " Default: the first acquisition."),
    step_days: int = typer.Option(5, "--step-days", min=1, help="Days between grid dates."),
    length: int = typer.Option(32, "--length", min=2, help="Grid dates T."),
    soil_slope: str = typer.Option("1.0", "--soil-slope", help="WDVI soil-line slope NIR/red, or 'auto' to estimate it from bare-soil observations (of --soil-mask, else of the whole scene)."),
    soil_mask: Optional[Path] = typer.Option(None, "--soil-mask", callback=exists, help="Raster of bare-soil pixels (non-zero) for --soil-slope auto."),
    ndvi_min: float = typer.Option(0.2, "--ndvi-min", min=-1, max=1, help="Drop pixels whose seasonal NDVI peak stays below this (-1 keeps every pixel)."),
    epochs: Optional[int] = typer.Option(None, "--epochs", min=1, help="Most epochs (default 150; early stopping usually ends sooner)."),
    patience: Optional[int] = typer.Option(None, "--patience", min=1, help="Early stopping: epochs without a lower validation loss (default 20)."),
    batch_size: Optional[int] = typer.Option(None, "--batch-size", min=1, help="Minibatch size (default 64)."),
    lr: Optional[float] = typer.Option(None, "--lr", callback=positive, help="Adam learning rate (default 1e-3, cosine to 1e-5)."),
    time_shift: Optional[int] = typer.Option(None, "--time-shift", min=0, help="Random shift of training series by up to N grid steps (default 2; 0 = off)."),
    max_pixels_per_field: Optional[int] = typer.Option(None, "--max-pixels-per-field", min=1, help="Subsample large fields to at most N pixels."),
    set_: Optional[list[str]] = typer.Option(None, "--set", metavar=SET_METAVAR, help="Model option KEY=VALUE (e.g. --set width=32, --set frequency_gate=true)."),
    run: RunOptions = None,
) -> None:
    """Train the FFDNN stress model; writes the checkpoint and a report (OA, per-class F1, kappa, loss curve).

    The model's FFT always runs in float32, whatever --precision says."""
    from hsikit.pipelines.train_stress import train_stress as train

    feats = tuple(f.strip() for f in features.split(",") if f.strip())
    res = train([str(s) for s in series], str(labels), out=out, fields=str(fields) if fields else None,
                attribute=attribute, allow_resample=allow_resample, features=feats, season_start=season_start,
                step_days=step_days, length=length, soil_slope=soil_slope,
                soil_mask=str(soil_mask) if soil_mask else None, ndvi_min=None if ndvi_min <= -1 else ndvi_min,
                model_config=model_config(set_), epochs=epochs, patience=patience, batch_size=batch_size, lr=lr,
                time_shift=time_shift, max_pixels_per_field=max_pixels_per_field, run=run)
    m = res.metrics
    if not m:  # a non-zero DDP rank: rank 0 reports
        return
    typer.echo(f"wrote {res.checkpoint}")
    f1 = ", ".join(f"{v:.3f}" for v in m["per_class_f1"])
    typer.echo(f"test fields: OA {m['oa']:.4f}  kappa {m['kappa']:.4f}  F1 per class [{f1}]  field OA "
               f"{m['fields']['oa']:.4f}  (report: {res.report_dir})")


@app.command("simulate-stress")
def simulate_stress(
    outdir: Path = typer.Argument(..., help="Folder to write: series/ (per-date GeoTIFFs + SCL), labels.tif, fields.tif, soil.tif, series.json."),
    fields_per_class: int = typer.Option(12, "--fields-per-class", min=1, help="Wheat fields per class."),
    field_size: int = typer.Option(16, "--field-size", min=1, help="Field side in 10 m pixels."),
    dates: Optional[int] = typer.Option(None, "--dates", min=2, help="Exactly N acquisition dates (default: a realistic 5-day revisit calendar)."),
    year: int = typer.Option(2021, "--year", min=1, max=9998, help="Year of the season."),
    seed: int = typer.Option(0, "--seed", min=0, help="Random seed."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace existing files."),
) -> None:
    """Write a simulated Sentinel-2 series of healthy, yellow-rust and N-deficient wheat fields (not real data)."""
    from hsikit.timeseries.simulator import SimConfig, simulate_series, write_series

    ds = simulate_series(SimConfig(fields_per_class=fields_per_class, field_size=field_size, n_dates=dates,
                                   year=year, seed=seed))
    paths = write_series(ds, outdir, overwrite=overwrite)
    typer.echo(f"wrote {len(paths['dates'])} dates ({ds.sizes['x']}x{ds.sizes['y']} px) to {paths['series']}, "
               f"{paths['labels'].name}, {paths['fields'].name}, {paths['soil'].name}, {paths['metadata'].name} "
               f"in {outdir}")
    typer.echo(f"next: hsikit train stress {paths['series']} --labels {paths['labels']} --fields {paths['fields']} "
               f"-o model.safetensors")
