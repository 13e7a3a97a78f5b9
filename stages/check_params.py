"""DVC stage `check_params`: validate params.yaml (against dvc.yaml's outputs) -> data/params.ok.

Every other stage depends on data/params.ok (download and prepare directly, the rest through them),
so DVC runs this first whenever a result-affecting key changes: a bad value fails here, before any
download. The file's content never changes, so passing this stage re-runs nothing downstream.

Usage (dvc.yaml): python -m stages.check_params PARAMS PIPELINE OUT
"""

import sys
from pathlib import Path

import yaml

from pix2pix.config import check_data_path, load_config
from pix2pix.errors import exit_on_error
from pix2pix.files import write_text


def outputs(pipeline: str) -> dict[str, str]:
    """Every path a stage of the pipeline writes: path -> stage."""
    stages = yaml.safe_load(Path(pipeline).read_text())["stages"]
    return {next(iter(o)) if isinstance(o, dict) else o: name for name, spec in stages.items()
            for kind in ("outs", "metrics", "plots") for o in spec.get(kind, [])}


@exit_on_error
def main(params: str, pipeline: str, out: str) -> None:
    check_data_path(load_config(params), outputs(pipeline))
    write_text(out, "params.yaml passed check_params\n")


if __name__ == "__main__":
    main(*sys.argv[1:])
