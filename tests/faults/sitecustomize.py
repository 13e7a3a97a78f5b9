"""Fault injection for subprocess tests: put this folder on PYTHONPATH and set
PIX2PIX_KILL_AT_STEP=N, and the N-th training step SIGKILLs its own process (as a crashed or
pre-empted machine would), with no chance to clean up."""

import os

if os.environ.get("PIX2PIX_KILL_AT_STEP"):
    import signal

    from pix2pix import trainer

    _step, _count = trainer.Pix2Pix.step, [0]

    def step(self, *args):
        _count[0] += 1
        if _count[0] == int(os.environ["PIX2PIX_KILL_AT_STEP"]):
            os.kill(os.getpid(), signal.SIGKILL)
        return _step(self, *args)

    trainer.Pix2Pix.step = step
