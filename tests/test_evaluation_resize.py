"""evaluation.resize samples exactly like PIL NEAREST, also for non-integer scales."""

import numpy as np
import pytest
from PIL import Image

from evaluation.resize import resize_nearest


@pytest.mark.parametrize("size", [(512, 1024), (322, 644), (23, 46), (100, 37), (1024, 2048), (700, 1500)])
def test_resize_nearest_equals_pil(size):
    a = np.arange(1024 * 2048, dtype=np.int32).reshape(1024, 2048)
    ref = np.array(Image.fromarray(a).resize((size[1], size[0]), Image.NEAREST))
    np.testing.assert_array_equal(resize_nearest(a, size), ref)


def test_closed_form_differs_from_pil_at_2048_to_644():
    """Why the running sum: floor((i + 0.5) * scale) picks other columns for some i."""
    closed = np.minimum(np.floor((np.arange(644) + 0.5) * (2048 / 644)).astype(int), 2047)
    a = np.arange(2048, dtype=np.int32)[None, :].repeat(2, 0)
    pil = np.array(Image.fromarray(a).resize((644, 2), Image.NEAREST))[0]
    assert (closed != pil).sum() > 0 and np.array_equal(resize_nearest(a, (2, 644))[0], pil)
