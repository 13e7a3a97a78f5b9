"""Image and mask readers on random and mutated PNG/JPEG bytes: the project's own error or a
valid array, never another exception (a crash) and never a hang (hypothesis deadline)."""

import io
from datetime import timedelta

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from pix2pix.data.pairs import read_class_ids, read_rgb
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


def only_our_error(reader, path):
    try:
        array = reader(path)
    except Pix2PixError as err:
        assert str(path) in str(err)
    else:
        assert isinstance(array, np.ndarray) and array.dtype == np.uint8


@settings(max_examples=300, deadline=timedelta(seconds=5), suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.one_of(st.binary(max_size=2048), mutated()))
def test_readers_fail_only_with_a_named_project_error(tmp_path, data):
    path = tmp_path / "file.png"
    path.write_bytes(data)
    only_our_error(read_rgb, path)
    only_our_error(read_class_ids, path)
