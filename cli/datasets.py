"""`hsikit datasets`: list, download and describe the benchmark hyperspectral scenes.

hsikit.datasets is imported inside the commands so that building the CLI stays light (no rasterio/torch).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import List, Optional

import typer

from hsikit.cli.state import state

app = typer.Typer(help="Benchmark hyperspectral datasets (Indian Pines, Pavia, Salinas, KSC, Botswana, Houston "
                       "2013): list them, download them with checksum verification, show their details.",
                  no_args_is_help=True, rich_markup_mode=None)

_DATA_DIR_HELP = "Dataset directory (default: $HSIKIT_DATA, else ~/.cache/hsikit/datasets)."


def _progress() -> bool:
    # hsikit.progress: a live bar on a terminal, a line every 10 % / 30 s in a log; nothing with `hsikit --quiet`
    return bool(state.get("progress", True))


@app.command("list")
def list_datasets(
    data_dir: Optional[Path] = typer.Option(None, "--data-dir", help=_DATA_DIR_HELP),
    as_json: bool = typer.Option(False, "--json", help="Print machine-readable JSON."),
) -> None:
    """List the datasets with their size, classes and whether their files are in the data directory."""
    from hsikit.datasets import DATASETS, resolve_data_dir, status

    rows = [(d, status(d.key, data_dir)) for d in DATASETS.values()]
    if as_json:
        typer.echo(json.dumps([{"key": d.key, "title": d.title, "sensor": d.sensor, "rows": d.rows, "cols": d.cols,
                                "bands": d.bands, "classes": d.num_classes, "status": s, "verified": d.verified,
                                "manual_download": d.manual is not None} for d, s in rows], indent=2))
        return
    from rich.console import Console
    from rich.table import Table

    # key, classes and status stay on the row's first line; the dataset cell (title, then sensor and size) wraps
    # to the terminal's width (80 columns when piped), folding rather than cutting a word
    t = Table()
    t.add_column("key", no_wrap=True)
    t.add_column("dataset", overflow="fold")
    t.add_column("classes", justify="right", no_wrap=True)
    t.add_column("status", no_wrap=True)
    for d, s in rows:
        shown = f"{s} (manual)" if d.manual and s != "present" else s
        t.add_row(d.key, f"{d.title}\n{d.sensor}, {d.size}", str(d.num_classes), shown)
    console = Console()
    console.print(t)
    console.print(f"data dir: {resolve_data_dir(data_dir)}", highlight=False, soft_wrap=True)


@app.command("download")
def download_datasets(
    keys: List[str] = typer.Argument(..., help="Dataset keys (see `hsikit datasets list`), or 'all'."),
    data_dir: Optional[Path] = typer.Option(None, "--data-dir", help=_DATA_DIR_HELP),
    force: bool = typer.Option(False, "--force", help="Download again even when a verified copy is present."),
    mirror: Optional[str] = typer.Option(None, "--mirror", metavar="URL",
                                         help="Fetch <URL>/<filename> instead of the catalogue URLs "
                                              "(default: $HSIKIT_DATASETS_MIRROR)."),
) -> None:
    """Download datasets into the data directory, verifying published checksums; present files are kept.

    Exits with 1 when a dataset has no direct download URL (Houston 2013) and prints how to get it by hand.
    """
    from hsikit.datasets import DATASETS, download, get

    wanted = list(DATASETS) if [k.lower() for k in keys] == ["all"] else [get(k).key for k in keys]
    state["interrupted"] = "the file being downloaded was discarded; finished files are kept"
    incomplete = False
    for key in dict.fromkeys(wanted):
        typer.echo(f"{key}:")
        res = download(key, data_dir, force=force, mirror=mirror, progress=_progress(),
                       echo=lambda line: typer.echo(f"  {line}"))
        if res.manual:
            incomplete = True
            typer.echo(f"  {res.manual}")
        else:
            typer.echo(f"  -> {res.directory}")
    if incomplete:
        raise typer.Exit(1)


@app.command("info")
def info(
    key: str = typer.Argument(..., help="Dataset key (see `hsikit datasets list`)."),
    data_dir: Optional[Path] = typer.Option(None, "--data-dir", help=_DATA_DIR_HELP),
    as_json: bool = typer.Option(False, "--json", help="Print machine-readable JSON."),
) -> None:
    """Show a dataset's sensor, size, classes and colours, files (URL, checksum, local copy) and citation."""
    from hsikit.datasets import find_files, get, resolve_data_dir

    d = get(key)
    found = find_files(d.key, data_dir)
    files = [{"filename": f.filename, "url": f.url, "checksum": f.checksum, "size": f.size,
              "verified": f.verified, "checksum_source": f.checksum_source,
              "local": str(found[f.filename]) if found[f.filename] else None} for f in d.files]
    if as_json:
        typer.echo(json.dumps({
            "key": d.key, "title": d.title, "sensor": d.sensor, "rows": d.rows, "cols": d.cols, "bands": d.bands,
            "classes": [{"value": i + 1, "name": n, "color": c} for i, (n, c) in
                        enumerate(zip(d.class_names, d.class_colors))],
            "files": files, "cube": {"file": d.cube_file, "variable": d.cube_variable},
            "ground_truth": {"file": d.gt_file, "variable": d.gt_variable}, "citation": d.citation,
            "licence": d.licence, "landing_page": d.landing_page, "manual_download": d.manual,
            "data_dir": str(resolve_data_dir(data_dir) / d.key)}, indent=2, ensure_ascii=False))
        return
    lines = [f"{d.key}: {d.title}", f"  sensor:   {d.sensor}", f"  size:     {d.size} (rows x cols x bands)",
             f"  classes:  {d.num_classes} (0 = unlabelled)"]
    lines += [f"    {i + 1:>2} {c}  {n}" for i, (n, c) in enumerate(zip(d.class_names, d.class_colors))]
    lines.append("  files:")
    for f in files:
        var = d.cube_variable if f["filename"] == d.cube_file else d.gt_variable
        role = "cube" if f["filename"] == d.cube_file else "ground truth"
        lines.append(f"    {f['filename']} ({role}, variable {var or 'auto'})")
        lines.append(f"      url:      {f['url'] or 'none (manual download)'}")
        check = f"{f['checksum']} (published: {f['checksum_source']})" if f["verified"] else "none (unverified)"
        lines.append(f"      checksum: {check}")
        lines.append(f"      local:    {f['local'] or 'missing'}")
    lines += [f"  page:     {d.landing_page}", f"  cite:     {d.citation}", f"  terms:    {d.licence}"]
    if d.manual:
        lines.append("  manual:   " + d.manual.replace("{dir}", str(resolve_data_dir(data_dir) / d.key)))
    typer.echo("\n".join(lines))
