"""Typer parameters built from the inference commands' option specs (:mod:`hsikit.pipelines.options`), so that
a single-scene command (:func:`spec_options`) and its batch task (:func:`batch_parameters`) declare no option
themselves: one declaration gives both the same flags, types, defaults, help and checks."""

from __future__ import annotations

import functools
import inspect
from enum import Enum
from pathlib import Path
from typing import Any, Callable, Optional

import typer

from hsikit.cli.options import exists, positive, size
from hsikit.pipelines.options import CommandSpec, Option

#: the checks made while the command line is parsed, by the name an option declares
_CALLBACKS = {"file": exists, "positive": positive, "size": size}


@functools.lru_cache(maxsize=None)
def choice_enum(choices: tuple[str, ...]) -> type[Enum]:
    """The enum typer turns into a choice of ``choices`` (one class per set of words)."""
    return Enum("Choice", {c: c for c in choices}, type=str)


def parameter(opt: Option) -> inspect.Parameter:
    """The typer parameter of ``opt`` (keyword-only, named as the pipeline's keyword)."""
    kind = choice_enum(opt.choices) if opt.choices else opt.type
    default = ... if opt.required else kind(opt.default) if opt.choices and opt.default is not None else opt.default
    extra: dict[str, Any] = {"callback": _CALLBACKS[opt.check]} if opt.check else {}
    if opt.low is not None:
        extra["min"] = opt.low
    if opt.metavar:
        extra["metavar"] = opt.metavar
    annotation = Optional[kind] if opt.default is None and not opt.required else kind
    return inspect.Parameter(opt.name, inspect.Parameter.KEYWORD_ONLY, annotation=annotation,
                             default=typer.Option(default, *opt.flags, help=opt.help, **extra))


def value(v: Any) -> Any:
    """A parsed option value as the pipelines take it: a choice as its word."""
    return v.value if isinstance(v, Enum) else v


def batch_parameters(spec: CommandSpec) -> list[inspect.Parameter]:
    """The batch task's own parameters: its checkpoint option, then its options that have flags."""
    model = spec.batch_model()
    return [parameter(o) for o in ([model] if model else []) + spec.batch() if o.flags]


def spec_options(spec: CommandSpec) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Give a single-scene command the options of ``spec`` in place of its parameter ``options``: the function
    declares its other parameters (scene, ``out``, ``overwrite``) and gets ``options``, a dict of the spec's
    values by name (choices as their words; paths as given)."""

    def decorate(command: Callable[..., Any]) -> Callable[..., Any]:
        sig = inspect.signature(command, eval_str=True)
        params = [parameter(o) for o in spec.single() if o.flags]
        names = [p.name for p in params]
        merged: list[inspect.Parameter] = []
        for p in sig.parameters.values():  # keyword-only, so the spec's options may sit between the others
            merged.extend(params if p.name == "options" else [p.replace(kind=inspect.Parameter.KEYWORD_ONLY)])

        @functools.wraps(command)
        def with_options(*args: Any, **kwargs: Any) -> Any:
            options = {n: value(kwargs.pop(n)) for n in names}
            return command(*args, options=options, **kwargs)

        with_options.__signature__ = sig.replace(parameters=merged)
        return with_options

    return decorate


def plain_options(kw: dict[str, Any]) -> dict[str, Any]:
    """Parsed option values as a batch manifest records them: choices as words, paths as strings, pairs as lists."""
    out = {}
    for k, v in kw.items():
        v = value(v)
        out[k] = str(v) if isinstance(v, Path) else list(v) if isinstance(v, tuple) else v
    return out
