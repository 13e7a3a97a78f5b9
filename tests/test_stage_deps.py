"""dvc.yaml against the code: each stage depends on exactly the project modules its command
imports (transitively, lazy imports included), on the params that change its results and on no
execution-only param; docs/params.md's table says truly which stage each key re-runs."""

from __future__ import annotations

import ast
import re
import shlex

import pytest
import yaml

from conftest import ROOT, params_doc_rows
from dvc_project import overridden, run
from pix2pix.config import EXECUTION_ONLY, flatten, load_config

STAGES = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]


def module_file(name: str):
    """pix2pix.data.tiles -> pix2pix/data/tiles.py (or the package's __init__.py); None if not ours."""
    if name.split(".")[0] not in ("pix2pix", "stages"):
        return None
    base = ROOT / name.replace(".", "/")
    return base.with_suffix(".py") if base.with_suffix(".py").exists() else base / "__init__.py"


def imported_modules(path) -> set[str]:
    """Every module an import statement anywhere in the file names (`from a import b` names a and,
    when b is a module, a.b)."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def import_closure(script) -> set[str]:
    """The script and every project file it imports, transitively, as paths relative to the root:
    empty package __init__ files too, which Python runs (and a later edit could fill)."""
    seen, todo = set(), [script]
    while todo:
        path = todo.pop()
        if path in seen:
            continue
        seen.add(path)
        for name in imported_modules(path):
            parts = name.split(".")
            for i in range(1, len(parts) + 1):  # importing a.b.c runs a/__init__ and a/b/__init__ too
                file = module_file(".".join(parts[:i]))
                if file is not None and file.exists():
                    todo.append(file)
    return {str(p.relative_to(ROOT)) for p in seen}


def command_script(cmd: str):
    args = shlex.split(cmd)
    assert args[:2] == ["python", "-m"] and args[2].startswith("stages."), f"{cmd}: run stages as python -m stages.X"
    return module_file(args[2])


@pytest.mark.parametrize("stage", sorted(STAGES))
def test_a_stage_depends_on_exactly_the_code_its_command_imports(stage):
    spec = STAGES[stage]
    declared = {d for d in spec.get("deps", []) if d.endswith(".py")}
    needed = import_closure(command_script(spec["cmd"]))
    assert not needed - declared, f"{stage}: dvc.yaml misses {sorted(needed - declared)}"
    assert not declared - needed, f"{stage}: dvc.yaml lists {sorted(declared - needed)}, never imported"


def test_the_closure_follows_lazy_imports_and_packages():
    """The checker itself: a function-level import counts; an import of a sibling package does not
    leak in unless named."""
    closure = import_closure(ROOT / "pix2pix/cli.py")
    assert {"pix2pix/bench/speed.py", "pix2pix/bench/__init__.py"} <= closure  # imported inside cli.bench
    closure = import_closure(ROOT / "stages/check_params.py")
    assert {"pix2pix/__init__.py", "pix2pix/data/__init__.py"} <= closure and "pix2pix/trainer.py" not in closure


def test_every_path_a_stage_uses_is_an_argument_of_its_command():
    """dvc.yaml is the one source of paths: each stage's deps, outs, metrics and plots outside the
    code are arguments of its command (a stage's script names no path of its own)."""
    for name, spec in STAGES.items():
        args = shlex.split(spec["cmd"])[3:]
        ordering = STAGES["check_params"]["outs"][0]  # data/params.ok: a dep for ordering, never read
        declared = [p for p in spec.get("deps", []) if not p.endswith(".py") and p not in ordering]
        declared += [next(iter(o)) if isinstance(o, dict) else o
                     for kind in ("outs", "metrics", "plots") for o in spec.get(kind, [])]
        for path in declared:
            assert path in args, f"{name}: {path} is not an argument of its cmd"
        source = module_file(shlex.split(spec["cmd"])[2]).read_text()
        assert not re.search(r"[\"'](data|models|metrics|checkpoints)/", source), f"{name}: a path in its script"


def test_the_losses_plot_names_the_losses_training_reports():
    from pix2pix.losses import LOSS_NAMES

    plots = yaml.safe_load((ROOT / "dvc.yaml").read_text())["plots"]
    losses = next(p["losses"] for p in plots if isinstance(p, dict) and "losses" in p)
    assert tuple(losses["y"]["metrics/train_epochs.csv"]) == LOSS_NAMES


def stage_params(stage: str) -> set[str]:
    """A stage's params in dvc.yaml, sections expanded to their dotted keys."""
    keys = set(flatten(load_config(ROOT / "params.yaml")))
    out = set()
    for entry in STAGES[stage].get("params", []):
        assert isinstance(entry, str), f"{stage}: params must name keys of params.yaml, not whole files"
        matched = {k for k in keys if k == entry or k.startswith(entry + ".")}
        assert matched, f"{stage}: param {entry} is not a key of params.yaml"
        out |= matched
    return out


def test_every_param_either_changes_a_stage_or_is_execution_only():
    keys = set(flatten(load_config(ROOT / "params.yaml")))
    used = {k for stage in STAGES for k in stage_params(stage)}
    assert keys == used | set(EXECUTION_ONLY)
    assert not used & set(EXECUTION_ONLY), "an execution-only key would re-run a stage"
    # check_params runs whenever any other stage would, and first: everything depends on its output
    assert stage_params("check_params") == {k for s in STAGES if s != "check_params" for k in stage_params(s)}
    (out,) = STAGES["check_params"]["outs"][0]
    assert out in STAGES["download"]["deps"] and STAGES["check_params"]["cmd"].endswith(out)


def params_table() -> dict[str, set[str]]:
    """docs/params.md's table: key -> the stages its 're-runs' column names."""
    rows = {}
    for cells in params_doc_rows():
        stages = set(re.findall(r"`(\w+)`", cells[3])) if cells[3] != "nothing" else set()
        for key in re.findall(r"`([\w.]+)`", cells[0]):
            rows[key] = stages
    return rows


def test_the_params_table_says_which_stages_each_key_re_runs():
    """Directly through its params, or downstream: whatever depends on a stage's outputs re-runs."""
    downstream = {"check_params": set(), "download": {"prepare", "train", "evaluate"},
                  "prepare": {"train", "evaluate"}, "train": {"evaluate"}, "evaluate": set()}
    table = params_table()
    keys = set(flatten(load_config(ROOT / "params.yaml")))
    assert set(table) == keys
    for key in keys:
        direct = {s for s in STAGES if s != "check_params" and key in stage_params(s)}
        assert table[key] == direct | {d for s in direct for d in downstream[s]}, key


EXECUTION_CHANGES = {"device": "cpu", "train.log_every": 5, "train.threads": 1,
                     "train.device_data_gb": 1.0, "train.compile": True, "train.cuda_graphs": False,
                     "train.checkpoint_every": 2, "train.resume": "never", "train.max_nonfinite_steps": 3,
                     "train.nproc_per_node": 2, "train.nnodes": 2, "train.rdzv_endpoint": "10.0.0.1:29500",
                     "train.dist_timeout_s": 60.0, "mlflow.enabled": False, "mlflow.tracking_uri": "sqlite:///x.db",
                     "mlflow.experiment": "other", "mlflow.registered_model": "cars"}


@pytest.mark.slow
def test_changing_execution_only_keys_re_runs_nothing_and_lambda_re_runs_train(reproduced):
    path, env = reproduced
    assert set(EXECUTION_CHANGES) == set(EXECUTION_ONLY)
    original = (path / "params.yaml").read_text()  # whatever the workspace holds now (other tests run exps)

    assert "up to date" in run(["dvc", "status"], path, env).lower()
    try:
        (path / "params.yaml").write_text(overridden(original, EXECUTION_CHANGES))
        assert "up to date" in run(["dvc", "status"], path, env).lower()
        (path / "params.yaml").write_text(overridden(original, {"lambda_l1": 7.0}))
        changed = yaml.safe_load(run(["dvc", "status", "--json"], path, env))
        assert set(changed) == {"check_params", "train"}  # evaluate follows the new generator
        # another mirror re-runs download: whether anything after it re-runs is up to the bytes it brings
        (path / "params.yaml").write_text(overridden(original, {"data.mirror": str(path)}))
        assert set(yaml.safe_load(run(["dvc", "status", "--json"], path, env))) == {"check_params", "download"}
    finally:
        (path / "params.yaml").write_text(original)
    assert "up to date" in run(["dvc", "status"], path, env).lower()
