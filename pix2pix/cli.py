"""The `pix2pix` command. DVC stages live in stages/; this is for people at a terminal."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from pix2pix.errors import exit_on_error

app = typer.Typer(add_completion=False, no_args_is_help=True, help="pix2pix-dvc: reproducible pix2pix with DVC.")


@app.callback()
def main() -> None:
    """Reproducible pix2pix. Train with `dvc repro`; these commands help around it."""


@app.command()
@exit_on_error
def params(path: Path = typer.Argument(Path("params.yaml"), help="params file to check")) -> None:
    """Validate a params file and print every resolved value (dotted names), one per line.

    Example: pix2pix params params.yaml
    """
    from pix2pix.config import flatten, load_config

    for key, value in flatten(load_config(path)).items():
        typer.echo(f"{key} = {json.dumps(value)}")


@app.command()
@exit_on_error
def synth(out: Path = typer.Argument(..., help="folder to create"), count: int = 20, seed: int = 0) -> None:
    """Write procedural car photos and class-id masks in the car-segmentation layout.

    Example: pix2pix synth /tmp/cars --count 50
    """
    from pix2pix.data.synthetic import write_dataset

    write_dataset(out, count, seed)
    typer.echo(f"wrote {count} pairs under {out}")


if __name__ == "__main__":
    app()
