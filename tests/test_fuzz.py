"""Image and mask readers on random and mutated PNG/JPEG bytes: the project's own error or a
valid array, never another exception (a crash) and never a hang (a per-case SIGALRM timer)."""

import faulthandler
import io
import signal
import sys
from contextlib import contextmanager

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from pix2pix.data.images import image_size, read_label, read_rgb
from pix2pix.errors import Pix2PixError


def encoded(fmt: str) -> bytes:
    buf = io.BytesIO()
    pixels = np.random.default_rng(0).integers(0, 255, (16, 24, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(buf, format=fmt)
    return buf.getvalue()


SEEDS = [encoded("PNG"), encoded("JPEG")]


@st.composite
def mutated(draw):
    data = bytearray(draw(st.sampled_from(SEEDS)))
    for _ in range(draw(st.integers(1, 8))):
        kind = draw(st.sampled_from(["flip", "cut", "insert"]))
        at = draw(st.integers(0, len(data) - 1))
        if kind == "flip":
            data[at] ^= draw(st.integers(1, 255))
        elif kind == "cut":
            del data[at:at + draw(st.integers(1, 64))]
        else:
            data[at:at] = draw(st.binary(min_size=1, max_size=16))
        if not data:
            break
    return bytes(data)


CASE_LIMIT_S = 5


class Hang(BaseException):
    """Raised by the timer. Not an Exception (TimeoutError is an OSError, which the readers turn into
    a Pix2PixError), so no `except Exception` in a reader or in PIL can swallow it."""


@contextmanager
def time_limit(seconds, what):
    """Interrupt the block after `seconds` with Hang. The signal handler runs between Python bytecodes,
    so a loop stuck inside C code is not interrupted: faulthandler then dumps every thread's stack and
    exits the run, which fails it instead of blocking it."""
    def alarm(signum, frame):
        raise Hang(f"{what} still running after {seconds} s: a hang")

    previous = signal.signal(signal.SIGALRM, alarm)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    faulthandler.dump_traceback_later(4 * seconds, exit=True)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        faulthandler.cancel_dump_traceback_later()
        signal.signal(signal.SIGALRM, previous)


def only_our_error(reader, path):
    try:
        array = reader(path)
    except Pix2PixError as err:
        assert str(path) in str(err)
    else:
        if reader is image_size:  # a header's (width, height)
            assert all(isinstance(n, int) and n > 0 for n in array)
        else:
            assert isinstance(array, np.ndarray) and array.dtype == np.uint8


# deadline=None: hypothesis's deadline only judges a case after it returns; the timer stops one that does not.
@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.one_of(st.binary(max_size=2048), mutated()))
def test_readers_fail_only_with_a_named_project_error(tmp_path, data):
    path = tmp_path / "file.png"
    path.write_bytes(data)
    with time_limit(CASE_LIMIT_S, f"reading {len(data)} bytes {data[:32].hex()}..."):
        only_our_error(read_rgb, path)
        only_our_error(read_label, path)
        only_our_error(image_size, path)


def test_a_hanging_reader_fails_the_fuzz_test(tmp_path, monkeypatch):
    """The limit really stops a case: with a reader that never returns, the test above fails fast."""
    def hangs(path):
        while True:
            pass

    this = sys.modules[__name__]
    monkeypatch.setattr(this, "read_rgb", hangs)
    monkeypatch.setattr(this, "CASE_LIMIT_S", 0.2)
    handler = signal.getsignal(signal.SIGALRM)
    with pytest.raises(Hang, match="still running after 0.2 s"):
        test_readers_fail_only_with_a_named_project_error(tmp_path=tmp_path)
    assert signal.getitimer(signal.ITIMER_REAL) == (0.0, 0.0) and signal.getsignal(signal.SIGALRM) is handler
