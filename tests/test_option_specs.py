"""The inference commands' options are declared once (hsikit.pipelines.options): the single-scene command, the batch
task command, the batch task table and the pipeline functions all agree with that declaration."""

from __future__ import annotations

import inspect
import subprocess
import sys

import pytest
import typer

from hsikit.errors import OptionError
from hsikit.pipelines.options import CLASSIFY, FORMATS, PREPROCESS, SPECS, STRESS, check_format


def _command(*path: str):
    from hsikit.cli.main import app

    cmd = typer.main.get_command(app)
    for name in path:
        cmd = cmd.commands[name]
    return cmd


def _defaults(params) -> dict:
    """{name: default} of click parameters, choices as their words."""
    return {p.name: getattr(p.default, "value", p.default) for p in params}


def test_the_spec_module_loads_neither_torch_nor_typer():
    code = ("import sys, hsikit.pipelines.options, hsikit.pipelines.batch_tasks; "
            "print(sorted(m for m in ('torch', 'typer', 'hsikit.cli') if m in sys.modules))")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert res.stdout.strip() == "[]"


@pytest.mark.parametrize("name", sorted(SPECS))
def test_single_scene_and_batch_commands_are_built_from_the_spec(name):
    spec = SPECS[name]
    single = {p.name: p for p in _command(name).params}
    for o in [o for o in spec.single() if o.flags]:
        p = single[o.name]
        assert p.help == o.help and set(p.opts + p.secondary_opts) == set(" ".join(o.flags).replace("/", " ").split())
        assert p.required == o.required and (p.required or getattr(p.default, "value", p.default) == o.default)
    batch = {p.name: p for p in _command("batch", name).params}
    for o in ([spec.batch_model()] if spec.model else []) + [o for o in spec.batch() if o.flags]:
        assert batch[o.name].help == o.help and batch[o.name].required == o.required
        if not o.required:
            assert _defaults([batch[o.name]])[o.name] == o.default


def test_batch_task_options_come_from_the_spec():
    from hsikit.pipelines.batch_tasks import TASKS

    for name, tk in TASKS.items():
        assert tk.spec is SPECS[name] and tk.command == name
        assert tk.options == SPECS[name].batch_defaults()
    # where batch differs on purpose: fixed tiles, not the single-scene memory plan
    assert TASKS["classify"].options["tile"] == 512 and TASKS["classify"].options["batch_size"] == 2
    assert "max_memory" not in TASKS["classify"].options
    with pytest.raises(OptionError, match=r"^--format must be cog or gtiff, not 'png'$"):
        TASKS["denoise"].normalise({"fmt": "png"})
    with pytest.raises(OptionError, match=r"^--probabilities must be float32 or uint8, not 'int8'$"):
        TASKS["classify"].normalise({"probabilities": "int8"})
    assert TASKS["classify"].normalise({"probabilities": "uint8", "tile": None})["tile"] == 512


@pytest.mark.parametrize("spec, fn", [(CLASSIFY, "hsikit.pipelines.classify:classify"),
                                      (PREPROCESS, "hsikit.pipelines.preprocess:preprocess_scene"),
                                      (STRESS, "hsikit.pipelines.stress:stress")])
def test_pipeline_defaults_equal_the_single_scene_defaults(spec, fn):
    import importlib

    module, name = fn.split(":")
    params = inspect.signature(getattr(importlib.import_module(module), name)).parameters
    for o in spec.options:
        if o.name in params and params[o.name].default is not inspect.Parameter.empty:
            assert params[o.name].default == o.default, o.name


def test_one_format_check():
    assert [check_format(f) for f in FORMATS] == ["cog", "gtiff"]
    with pytest.raises(OptionError, match=r"^--format must be cog or gtiff, not 'tif'$"):
        check_format("tif")


def test_classify_refuses_bad_values_before_reading_anything(tmp_path):
    from hsikit.pipelines.classify import classify

    with pytest.raises(OptionError, match="--format must be cog or gtiff"):
        classify(tmp_path / "missing.tif", out=tmp_path / "o.tif", fmt="png")
    with pytest.raises(OptionError, match="--probabilities must be float32 or uint8"):
        classify(tmp_path / "missing.tif", out=tmp_path / "o.tif", probabilities="int8")
