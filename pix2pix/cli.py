"""The `pix2pix` command. DVC stages live in stages/; this is for people at a terminal.

Each command imports the project modules it needs when it runs: they pull in torch (and some
mlflow), seconds of start-up that `pix2pix --help` or `pix2pix params` should not pay.
"""

from __future__ import annotations

import json
import os
import shlex
import sys
from pathlib import Path

import typer
import yaml

from pix2pix.data.framing import MAX_PIXELS
from pix2pix.errors import Pix2PixError, exit_on_error

PARAMS = Path(__file__).resolve().parent.parent / "params.yaml"  # the repo's defaults


def params_or_defaults(path: Path) -> Path:
    """The params file of commands that only need settings: the one given, or ./params.yaml, else
    the repo's defaults, so that they also work outside a project folder."""
    if path.exists():
        return path.resolve()
    if path != Path("params.yaml"):
        raise Pix2PixError(f"--params {path}: no such file")
    return PARAMS
app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False, rich_markup_mode=None,
                  help="pix2pix-dvc: reproducible pix2pix with DVC.")


@app.callback()
def main(debug: bool = typer.Option(False, "--debug", help="show the traceback of an unexpected error")) -> None:
    """Reproducible pix2pix. Train with `dvc repro`; these commands help around it."""
    if debug:
        os.environ["PIX2PIX_DEBUG"] = "1"


@app.command()
@exit_on_error
def params(path: Path = typer.Argument(Path("params.yaml"), help="params file to check")) -> None:
    """Validate a params file and print every resolved value (dotted names), one per line.

    \b
    Example: pix2pix params params.yaml
    """
    from pix2pix.config import flatten, load_config

    for key, value in flatten(load_config(path)).items():
        typer.echo(f"{key} = {json.dumps(value)}")


@app.command()
@exit_on_error
def synth(out: Path = typer.Argument(..., help="folder to create"), count: int = 20, seed: int = 0) -> None:
    """Write procedural car photos and class-id masks in the car-segmentation layout.

    \b
    Example: pix2pix synth /tmp/cars --count 50
    """
    from pix2pix.data.synthetic import write_dataset

    write_dataset(out, count, seed)
    typer.echo(f"wrote {count} pairs under {out}")


@app.command()
@exit_on_error
def bench(size: int = typer.Option(256, help="image size (the paper: 256)"),
          batch_sizes: str = typer.Option("1,4,16,32,64", help="batch sizes for this project's rows"),
          steps: int = typer.Option(30, help="timed steps per row"),
          warmup: int = typer.Option(5, help="untimed steps before each row (cuDNN autotuning, compile)"),
          workers: int = typer.Option(4, help="DataLoader workers of the classic reference (its default: 4)"),
          ngf: int = typer.Option(64, help="generator and discriminator width (the paper: 64)"),
          device: str = typer.Option("auto", help="auto, cpu, cuda or cuda:N"),
          tiles: Path = typer.Option(None, help="prepared tiles folder (default: synthetic cars)"),
          compile: bool = typer.Option(False, "--compile", help="add torch.compile rows (slow warm-up)"),
          host_data: bool = typer.Option(False, "--host-data", help="add a row with tiles in pinned host memory"),
          profile: bool = typer.Option(False, "--profile", help="print torch.profiler's top operators at the fastest batch"),
          nproc_per_node: int = typer.Option(1, help="> 1: add data-parallel scaling rows (torchrun, N processes)"),
          concurrent: str = typer.Option("", help="e.g. 1,2,4,8: add rows of N batch-1 trainings at once on the "
                                                 "device, as `dvc queue start -j N` runs a sweep"),
          json_path: Path = typer.Option(None, "--json", help="also write the table as JSON"),
          params_file: Path = typer.Option(Path("params.yaml"), "--params", help="params for the rest of the settings "
                                                                                 "(default: this folder's, else the repo's)")) -> None:
    """Training speed: the classic pix2pix pipeline (a) against this project's (b), same device.

    \b
    Example: pix2pix bench --size 256 --json bench.json
    On a CPU:                   pix2pix bench --size 64 --ngf 8 --batch-sizes 1,4 --device cpu
    Scaling on 2 GPUs:          pix2pix bench --nproc-per-node 2
    Trainings sharing one GPU:  pix2pix bench --batch-sizes 1 --concurrent 1,2,4,8
    """
    counts = [int(n) for n in concurrent.split(",") if n.strip().isdigit() and int(n) > 0] if concurrent else []
    if concurrent and len(counts) != len(concurrent.split(",")):
        raise Pix2PixError(f"--concurrent is {concurrent!r}; give counts of trainings, such as 1,2,4,8")

    import tempfile

    import torch

    from pix2pix.bench.concurrent import concurrent_rows, format_concurrent
    from pix2pix.bench.pipeline import synthetic_tiles
    from pix2pix.bench.scaling import format_scaling, scaling_rows
    from pix2pix.bench.speed import format_table, speed_rows
    from pix2pix.config import load_config
    from pix2pix.distributed import device_name, norm_for, pick_device
    from pix2pix.files import write_json

    params_file = params_or_defaults(params_file)
    overrides = {"image_size": size, "model.ngf": ngf, "model.ndf": ngf, "device": device}
    cfg = load_config(params_file, overrides)
    dev = pick_device(device)
    sizes = [int(b) for b in batch_sizes.split(",")]
    with tempfile.TemporaryDirectory(prefix="pix2pix-bench-") as tmp:
        count = max(64, round(1.5 * max(sizes) * nproc_per_node) + 8)  # enough train tiles for the largest batch
        tiles = tiles or synthetic_tiles(cfg, count, Path(tmp))
        rows, summary = speed_rows(cfg, tiles, dev, sizes, steps, warmup, workers, compile, host_data, profile)
        typer.echo(format_table(rows, dev))
        scaling = together = []
        if nproc_per_node > 1:
            fastest = max(rows[1:], key=lambda r: r["images_per_s"])["batch"]
            norm = {"model.norm": norm_for(cfg.model.norm, nproc_per_node, dev.type)}
            scaling = scaling_rows(params_file, {**overrides, **norm}, tiles, fastest, nproc_per_node, steps, warmup)
            typer.echo(format_scaling(scaling))
        if counts:
            together = concurrent_rows(params_file, overrides, tiles, counts, steps, warmup)
            typer.echo(format_concurrent(together))
    if summary:
        typer.echo(summary)
    if json_path:
        write_json(json_path, {"device": device_name(dev), "torch": torch.__version__, "size": size, "rows": rows,
                               "scaling": scaling, "concurrent": together})


@app.command()
@exit_on_error
def torchrun(node_rank: int = typer.Option(0, help="this machine's number: 0 is the one running dvc repro"),
             params_file: Path = typer.Option(Path("params.yaml"), "--params", help="params file of the run")) -> None:
    """Print the torchrun line of the train stage for one machine of a multi-machine run.

    Machine 0 runs `dvc repro`, which starts this line itself; start the printed line for
    --node-rank 1, 2, ... on each other machine (same code, params and data/tiles there).

    \b
    Example: pix2pix torchrun --node-rank 1
    """
    from pix2pix.config import load_config
    from pix2pix.distributed import torchrun_command

    cfg = load_config(params_file)
    if not 0 <= node_rank < cfg.train.nnodes:
        raise Pix2PixError(f"--node-rank {node_rank}: must be in [0, train.nnodes={cfg.train.nnodes})")
    stages = params_file.parent / "dvc.yaml"
    try:  # the train stage's command as DVC runs it: python -m stages.train ARGS
        target = shlex.split(yaml.safe_load(stages.read_text())["stages"]["train"]["cmd"])[1:]
    except (OSError, KeyError, TypeError, yaml.YAMLError) as err:
        raise Pix2PixError(f"{stages}: no train stage to read ({type(err).__name__}); keep dvc.yaml next to the params file") from None
    typer.echo(shlex.join(torchrun_command(cfg, *target, node_rank=node_rank)))


@app.command()
@exit_on_error
def ui(params_file: Path = typer.Option(Path("params.yaml"), "--params", help="params file naming the store"),
       host: str = typer.Option("127.0.0.1", help="interface to listen on; loopback keeps it private"),
       port: int = typer.Option(5000, help="port to listen on"),
       workers: int = typer.Option(1, min=1, help="server processes: one serves a browser or two and starts "
                                                  "sooner than MLflow's default of 4")) -> None:
    """Start the MLflow UI on this project's tracking store and print its URL.

    The store is $MLFLOW_TRACKING_URI, else mlflow.tracking_uri in params.yaml.

    \b
    Example: pix2pix ui --port 5001   (then open the printed URL; Ctrl-C stops it)
    """
    from pix2pix.tracking import project_tracking_uri
    from pix2pix.ui import serve_ui

    uri = project_tracking_uri(params_file)
    typer.echo(f"MLflow UI for {uri} at http://{host}:{port}")
    sys.exit(serve_ui(uri, host, port, workers))  # not typer.Exit: exit_on_error takes that Exception for an error


@app.command()
@exit_on_error
def translate(model: str = typer.Argument(..., help="models/generator.pt, a checkpoint, runs:/<run id>/model, "
                                                    "models:/<name>/<version> or models:/<name>@<alias>"),
              inputs: list[Path] = typer.Argument(..., help="image files or folders"),
              out: Path = typer.Option(Path("translated"), "--out", help="folder for <name>.png outputs"),
              mode: str = typer.Option("paper", help="paper: dropout and per-image batch statistics, as the "
                                                     "paper tests; eval: deterministic eval mode"),
              batch_size: int = typer.Option(8, help="tiles per forward pass (the outputs do not depend on it)"),
              device: str = typer.Option("auto", help="auto, cpu, cuda or cuda:N"),
              seed: int = typer.Option(0, help="seed of the dropout noise in paper mode"),
              scale: str = typer.Option("train", help="train: at the scale the model was trained on, resized back "
                                                      "to the input's size; native: at the input's own resolution"),
              max_pixels: int = typer.Option(MAX_PIXELS, help="native scale: larger images are generated in "
                                                              "blended tiles instead of whole")) -> None:
    """Translate your own images with a trained generator; any size and aspect ratio.

    Each input is fed as the model's training tiles were made: framed by its data.fit, and, for a
    label-map model, class ids (a grey map) coloured with its palette; a colour map passes as it is.

    \b
    Example: pix2pix translate models/generator.pt my_masks/ --out translated/
    """
    from pix2pix.distributed import pick_device
    from pix2pix.translate import translate as run_translate

    for path in run_translate(model, inputs, out, mode, batch_size, pick_device(device), seed, scale, max_pixels):
        typer.echo(path)


@app.command()
@exit_on_error
def export(model: str = typer.Argument(..., help="models/generator.pt, a checkpoint, runs:/<id>/model or models:/<name>/<v>"),
           out: Path = typer.Option(Path("generator.pt2"), "--out", help="file to write"),
           fmt: str = typer.Option("pt2", "--format", help="pt2: a torch.export program; torchscript: for "
                                                           "runtimes that still load TorchScript (deprecated by torch)")) -> None:
    """Export the generator (eval mode) for use without this package:
    torch.export.load(FILE).module()(x), or torch.jit.load(FILE)(x) for --format torchscript.

    \b
    Example: pix2pix export models/generator.pt --out generator.pt2
    """
    from pix2pix.translate import export as run_export

    typer.echo(run_export(model, out, fmt))


@app.command()
@exit_on_error
def demo(model: str = typer.Argument("models/generator.pt", help="a generator file, checkpoint, runs:/<id>/model "
                                                                 "or models:/<name>/<version>"),
         host: str = typer.Option("127.0.0.1", help="interface to listen on; loopback keeps it private"),
         port: int = typer.Option(8000, help="port to listen on"),
         tiles: Path = typer.Option(Path("data/tiles"), help="prepared tiles whose test split gives starting samples"),
         metrics: Path = typer.Option(Path("metrics/eval.json"), help="the evaluate stage's metrics, for the test FID"),
         device: str = typer.Option("auto", help="auto, cpu, cuda or cuda:N")) -> None:
    """A page to try a model by hand: paint a label map (or upload or sketch an image) and see
    the translation beside it, as `pix2pix translate` would generate it.

    \b
    Example: pix2pix demo     (then open the printed address; Ctrl-C stops it)
    """
    from pix2pix.demo import Demo, serve, serve_forever
    from pix2pix.distributed import pick_device

    page = Demo(model, pick_device(device), tiles if tiles.is_dir() else None, metrics)
    server = serve(page, host, port)
    typer.echo(f"pix2pix demo of {model} at http://{host}:{server.server_address[1]}")
    sys.stdout.flush()
    serve_forever(server)


data_app = typer.Typer(no_args_is_help=True, rich_markup_mode=None, help="Your own pairs: see them as the pipeline will, before a long run.")
app.add_typer(data_app, name="data")


@data_app.command("check")
@exit_on_error
def data_check(path: Path = typer.Argument(..., help="the folder of your pairs (what data.path will name)"),
               layout: str = typer.Option(None, help="auto, ab, paired or labels (default: params.yaml's data.layout)"),
               palette: str = typer.Option(None, help="cars, ade20k or a JSON file in PATH (default: data.palette)"),
               fit: str = typer.Option(None, help="crop or pad (default: data.fit)"),
               size: int = typer.Option(None, help="the model's image size (default: image_size)"),
               preview: Path = typer.Option(Path("data_check.png"), help="where to draw the first pairs as the model sees them"),
               params_file: Path = typer.Option(Path("params.yaml"), "--params", help="params for the defaults "
                                                                                      "(default: this folder's, else the repo's)")) -> None:
    """Check a folder of pairs: its layout, pairs per split, sizes and modes, every problem that
    prepare would refuse, and a preview of the first pairs framed and coloured as the model sees them.

    \b
    Example: pix2pix data check data/own     (then open data_check.png)
    """
    from pix2pix.config import load_config
    from pix2pix.data.check import check
    from pix2pix.data.tiles import downloaded_dataset

    dataset = downloaded_dataset(path) or "folder"  # data/raw holds a built-in dataset the download stage wrote
    overrides = {"dataset": dataset, "data.path": str(path), "data.layout": layout, "data.palette": palette,
                 "data.fit": fit, "image_size": size, "mlflow.enabled": False}
    cfg = load_config(params_or_defaults(params_file), {k: v for k, v in overrides.items() if v is not None})
    report = check(path, cfg, preview)
    for line in report.lines():
        typer.echo(line)
    typer.echo(f"preview: {preview}")
    if report.problem:
        raise Pix2PixError(f"{path}: prepare would refuse this folder (problems above)")


@app.command()
@exit_on_error
def doctor(params_file: Path = typer.Option(Path("params.yaml"), "--params", help="params file to check")) -> None:
    """Check what a long run needs: device, bf16, memory, FID network, DVC, MLflow store, dataset.

    Exits 1 when something blocks a run (a FAIL line).

    \b
    Example: pix2pix doctor
    """
    from pix2pix.doctor import diagnose

    checks = diagnose(params_file)
    for c in checks:
        typer.echo(f"{c.status:<4}  {c.name:<8} {c.detail}")
    if any(c.status == "FAIL" for c in checks):
        raise Pix2PixError("doctor found blockers (FAIL lines above)")


if __name__ == "__main__":
    app()
