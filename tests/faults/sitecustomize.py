"""Fault injection for subprocess tests: put this folder on PYTHONPATH and set
PIX2PIX_KILL_AT_STEP=N, and the N-th training step SIGKILLs its own process (as a crashed or
pre-empted machine would), with no chance to clean up; PIX2PIX_HANG_AT_STEP=N makes it stop
answering instead (a stuck GPU or network); PIX2PIX_NAN_AT_STEP=N feeds it a NaN batch.
PIX2PIX_FAULT_RANK=R limits each to the process of rank R under torchrun. PIX2PIX_KILL_AT_IMAGE=N SIGKILLs the process half-way through writing its
N-th image file (a stage killed mid-write). PIX2PIX_DATASET_URL=NAME=URL points a dataset at a
local server."""

import os

_kill, _hang = os.environ.get("PIX2PIX_KILL_AT_STEP"), os.environ.get("PIX2PIX_HANG_AT_STEP")
_nan = os.environ.get("PIX2PIX_NAN_AT_STEP")
_rank = os.environ.get("PIX2PIX_FAULT_RANK")
if (_kill or _hang or _nan) and (_rank is None or _rank == os.environ.get("RANK")):
    import signal
    import time

    from pix2pix import trainer

    _step, _count = trainer.Pix2Pix.step, [0]

    def step(self, *args):
        _count[0] += 1
        if _kill and _count[0] == int(_kill):
            os.kill(os.getpid(), signal.SIGKILL)
        if _hang and _count[0] == int(_hang):
            while True:
                time.sleep(60)
        if _nan and _count[0] == int(_nan):
            args = tuple(x * float("nan") for x in args)
        return _step(self, *args)

    trainer.Pix2Pix.step = step

_url = os.environ.get("PIX2PIX_DATASET_URL")  # NAME=URL: that dataset downloads from URL (a test's local server)
if _url:
    import dataclasses

    from pix2pix.data import sources

    _name, _address = _url.split("=", 1)
    sources.DATASETS[_name] = dataclasses.replace(sources.DATASETS[_name], urls=(_address,))

_kill_image = os.environ.get("PIX2PIX_KILL_AT_IMAGE")
if _kill_image:
    import io
    import signal  # noqa: F811 (also imported above when a step fault is set)

    from PIL import Image

    _save, _saved = Image.Image.save, [0]

    def save(self, fp, *args, **kwargs):
        _saved[0] += 1
        if _saved[0] == int(_kill_image):  # write the first half of this file's bytes, then die
            buf = io.BytesIO()
            _save(self, buf, *args, **{"format": "PNG", **kwargs})
            with open(fp, "wb") as f:
                f.write(buf.getvalue()[: len(buf.getvalue()) // 2])
                f.flush()
            os.kill(os.getpid(), signal.SIGKILL)
        return _save(self, fp, *args, **kwargs)

    Image.Image.save = save
