import re

import pytest
import yaml
from typer.testing import CliRunner

from pix2pix.cli import app
from pix2pix.config import flatten, load_config
from pix2pix.errors import Pix2PixError

from conftest import ROOT, params_doc_rows


def test_the_params_table_gives_every_default_of_params_yaml():
    """docs/params.md's default column, row by row, against the loaded params.yaml."""
    flat = flatten(load_config(ROOT / "params.yaml"))
    documented = {}
    for cells in params_doc_rows():
        keys, defaults = re.findall(r"`([\w.]+)`", cells[0]), re.findall(r"`([^`]*)`", cells[1])
        documented.update(zip(keys, defaults * len(keys) if len(defaults) == 1 else defaults))
    assert documented.keys() == flat.keys()
    for key, value in flat.items():
        shown = documented[key].strip('"')
        assert shown == str(value).lower() if isinstance(value, bool) else (
            float(shown) == value if isinstance(value, float) else shown == str(value)), key


def test_every_param_has_a_comment():
    for line in (ROOT / "params.yaml").read_text().splitlines():
        stripped = line.strip()
        if stripped and not stripped.startswith("#") and not stripped.endswith(":"):
            assert "#" in line, f"params.yaml line without a comment: {line!r}"


def write_params(tmp_path, edit):
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    edit(params)
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(params))
    return path


BAD = [
    (lambda p: p.update(epochs="ten"), "'epochs' must be int"),
    (lambda p: p.update(epochs=0), "'epochs' is 0; it must be >= 1"),
    (lambda p: p.update(image_size=100), "'image_size' is 100; it must be a power of two"),
    (lambda p: p.update(dataset="imagenet"), "'dataset' is 'imagenet'; it must be one of"),
    (lambda p: p.update(direction="sideways"), "'direction' is 'sideways'; allowed: auto, AtoB, BtoA"),
    (lambda p: p.update(lamda_l1=10), "unknown key 'lamda_l1'; did you mean 'lambda_l1'? allowed here: dataset"),
    (lambda p: p["model"].update(nfg=8), "unknown key 'model.nfg'; did you mean 'model.ngf'?"),
    (lambda p: (p.update(dataset="folder"), p["data"].update(path="")), "'data.path' is ''; it must be the folder of your pairs"),
    (lambda p: p["data"].update(layout="grid"), "'data.layout' is 'grid'; allowed: auto, ab, paired, labels"),
    (lambda p: p["model"].update(ngf=3.5), "'model.ngf' must be int"),
    (lambda p: p["model"].update(norm="layer"), "'model.norm' is 'layer'; allowed: batch, instance"),
    (lambda p: p["optim"].pop("lr"), "missing key 'optim.lr'"),
    (lambda p: p["optim"].update(decay_share=1.5), "'optim.decay_share' is 1.5; it must be in"),
    (lambda p: p["augment"].update(flip="yes"), "'augment.flip' must be bool"),
    (lambda p: p.update(model=5), "'model' must be a mapping"),
    (lambda p: p.update(epochs=-3), "'epochs' is -3; it must be >= 1"),
    (lambda p: p["train"].update(resume="maybe"), "'train.resume' is 'maybe'; allowed: auto, never"),
    (lambda p: p["train"].update(compile=True), "'train.compile' is True; it must be false when train.cuda_graphs"),
    (lambda p: p["train"].update(max_nonfinite_steps=-1), "'train.max_nonfinite_steps' is -1; it must be >= 0"),
    (lambda p: p["eval"].update(fid_extractor="inception"), "'eval.fid_extractor' is 'inception'; allowed: auto, "),
    (lambda p: p["train"].update(nproc_per_node=2), "'batch_size' is 1; it must be a multiple of the 2 processes"),
    (lambda p: p["train"].update(nnodes=2, nproc_per_node=1), "'train.rdzv_endpoint' is ''; it must be host:port"),
    (lambda p: p["train"].update(nproc_per_node=0), "'train.nproc_per_node' is 0; it must be >= 1"),
    (lambda p: p["train"].update(dist_timeout_s=0), "'train.dist_timeout_s' is 0.0; it must be > 0"),
]


@pytest.mark.parametrize("edit,message", BAD)
def test_bad_params_name_the_key(tmp_path, edit, message):
    with pytest.raises(Pix2PixError, match=re.escape(message)) as err:
        load_config(write_params(tmp_path, edit))
    assert "\n" not in str(err.value)  # one line


def test_malformed_yaml_and_missing_override_key(tmp_path):
    bad = tmp_path / "params.yaml"
    bad.write_text("epochs: [1,\n")
    with pytest.raises(Pix2PixError, match="malformed YAML"):
        load_config(bad)
    with pytest.raises(Pix2PixError, match="cannot override 'model.nfg'"):
        load_config(ROOT / "params.yaml", {"model.nfg": 8})


def test_cli_params_prints_values_and_fails_cleanly(tmp_path):
    runner = CliRunner()
    ok = runner.invoke(app, ["params", str(ROOT / "params.yaml")])
    assert ok.exit_code == 0 and "lambda_l1 = 1000.0" in ok.output
    bad = runner.invoke(app, ["params", str(write_params(tmp_path, lambda p: p.update(seed=-1)))])
    assert bad.exit_code == 1
    assert "'seed' is -1" in bad.output and "Traceback" not in bad.output


def test_the_machine_dependent_process_rules_refuse_in_one_line():
    from pix2pix.distributed import check_processes, norm_for

    two = load_config(ROOT / "params.yaml", {"train.nproc_per_node": 2, "batch_size": 2})
    with pytest.raises(Pix2PixError, match="'train.nproc_per_node' is 2 but 1 GPUs are visible here; one process per GPU"):
        check_processes(two, "cuda", gpus=1)
    check_processes(two, "cuda", gpus=2)  # one GPU each: fine
    with pytest.raises(Pix2PixError, match="'model.norm' is batch, which several CPU processes cannot synchronise"):
        check_processes(two, "cpu", gpus=0)
    assert norm_for("batch", 2, "cpu") == "instance" and norm_for("batch", 1, "cpu") == norm_for("batch", 2, "cuda") == "batch"
