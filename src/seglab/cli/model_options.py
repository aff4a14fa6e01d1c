"""The options every verb takes for a model that does not describe itself, with one meaning.

``--mean``, ``--std``, ``--scale``, ``--channels``, ``--classes``, ``--num-classes`` and
``--model`` are declared here once and turned into one
:class:`~seglab.artifacts.settings.ModelSettings` by :func:`settings`; the loader in
``seglab.artifacts`` applies them. (``--size`` stays each verb's own option, passed in.)
A verb declared with :func:`takes_settings` gets all of them, and the one value, at once.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from typing import Any

import typer

from seglab.cli.output import err_console, fail

MODEL_SOURCES = ("run folder, model folder (config.json), .ckpt, .onnx, TorchScript (.pt/.ts), "
                 "or a state dict (.pth/.pt/.safetensors, with --model)")
SOURCE_HELP = MODEL_SOURCES[0].upper() + MODEL_SOURCES[1:] + "."


def mean_option() -> Any:
    return typer.Option(None, "--mean", help="Input mean per channel, in the model's channel "
                        "order, on the --scale scale, e.g. 0.485,0.456,0.406 (--scale 1) or "
                        "104,117,123 (--scale 255) [default: what the model file says].")


def std_option() -> Any:
    return typer.Option(None, "--std", help="Input std per channel, like --mean; 1,1,1 with "
                        "--scale 255 means no division (mean subtraction only).")


def scale_option() -> Any:
    return typer.Option(None, "--scale", help="The pixel scale --mean/--std are for: 1 "
                        "(pixels in 0..1) or 255 (pixels in 0..255). Required with them.")


def channels_option() -> Any:
    return typer.Option(None, "--channels", help="Channel order the model reads: rgb or bgr "
                        "[default: what the model file says, else rgb].")


def classes_option() -> Any:
    return typer.Option(None, "--classes", help="Class table of the model's outputs "
                        "(classes.csv, label_colors.txt or one name per line) [default: the "
                        "model's own, else the dataset's in eval].")


def num_classes_option() -> Any:
    return typer.Option(None, "--num-classes", help="Classes the model predicts (a state dict "
                        "needs it, or --classes).")


def model_option() -> Any:
    return typer.Option(None, "--model", help="Registry model to load a state dict into, "
                        "NAME or NAME:key=value,... (`seglab models list`).")


def _numbers(text: str | None, option: str) -> list[float] | None:
    if text is None:
        return None
    try:
        values = [float(p) for p in text.replace(" ", ",").split(",") if p.strip()]
    except ValueError:
        values = []
    if not values:
        fail(f"{option} must be numbers, one per channel, like 0.485,0.456,0.406, got {text!r}")
    return values


def settings(mean: str | None = None, std: str | None = None, scale: float | None = None,
             channels: str | None = None, classes: str | None = None,
             num_classes: int | None = None, model: str | None = None,
             size: tuple[int, int] | None = None) -> Any:
    """The verb's options as one ``ModelSettings`` (a bad value: one ``error:`` line)."""
    from seglab.artifacts.settings import ModelSettings
    from seglab.errors import SeglabError

    try:
        return ModelSettings(
            mean=_numbers(mean, "--mean"), std=_numbers(std, "--std"), scale=scale,
            channels=channels.lower() if channels else None, classes=classes,
            num_classes=num_classes, model=model, size=size,
        )
    except SeglabError as exc:
        fail(str(exc))


def takes_settings(command: Callable[..., Any]) -> Callable[..., Any]:
    """``command`` (a typer verb taking ``settings``) with the model options above as its CLI
    options, handed to it as one ``settings`` (:func:`settings`; a bad value: one ``error:``
    line before the verb runs)."""
    options = {"mean": (str | None, mean_option), "std": (str | None, std_option),
               "scale": (float | None, scale_option),
               "channels": (str | None, channels_option),
               "classes": (str | None, classes_option),
               "num_classes": (int | None, num_classes_option),
               "model": (str | None, model_option)}

    @functools.wraps(command)
    def verb(**kwargs: Any) -> Any:
        given = {name: kwargs.pop(name) for name in options}
        return command(settings=settings(**given), **kwargs)

    own = [p for p in inspect.signature(command).parameters.values() if p.name != "settings"]
    added = [inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=make(),
                               annotation=annotation)
             for name, (annotation, make) in options.items()]
    verb.__signature__ = inspect.Signature([*own, *added])  # type: ignore[attr-defined]
    # typer reads the types from the annotations, resolved in the verb's own module.
    verb.__annotations__ = {**{k: v for k, v in command.__annotations__.items()
                               if k != "settings"},
                            **{name: annotation for name, (annotation, _) in options.items()}}
    return verb


def print_notes(notes: list[str] | None) -> None:
    """Say which defaults the model was run with (to stderr: stdout may be JSON)."""
    for note in notes or []:
        err_console.print(f"note: {note}", highlight=False, soft_wrap=True)
