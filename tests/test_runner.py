import functools
import operator

import pytest

from pseudo_labels.core.errors import PseudoLabelsError
from pseudo_labels.core.runner import run_per_image

double = functools.partial(operator.mul, 2)


@pytest.mark.parametrize("workers", [1, 2])
def test_local_results_in_item_order(workers):
    s = run_per_image(double, list(range(7)), workers=workers, progress=False)
    assert s.results == [0, 2, 4, 6, 8, 10, 12]
    assert (s.done, s.skipped, s.failed) == (7, 0, [])


def test_failures_are_reported_per_item_and_others_complete():
    s = run_per_image(int, ["1", "x", "3"], workers=2, progress=False)
    assert s.results == [1, None, 3]
    assert s.done == 2 and len(s.failed) == 1
    name, message = s.failed[0]
    assert name == "x" and "invalid literal" in message
    with pytest.raises(PseudoLabelsError, match="1 images failed: x"):
        s.raise_if_failed()


def test_fail_fast_raises():
    with pytest.raises(PseudoLabelsError, match="x"):
        run_per_image(int, ["x", "1"], workers=1, fail_fast=True, progress=False)


def test_is_done_skips():
    s = run_per_image(double, [1, 2, 3], is_done=lambda x: x == 2, progress=False)
    assert s.results == [2, None, 6] and s.skipped == 1 and s.done == 2


def test_unknown_executor():
    with pytest.raises(PseudoLabelsError, match="unknown executor"):
        run_per_image(double, [1, 2], executor="dask", progress=False)


def test_ray_executor_matches_local_pool():
    ray = pytest.importorskip("ray")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        items = list(range(9)) + ["bad"]
        local = run_per_image(functools.partial(operator.mul, 3), items[:-1], workers=2, progress=False)
        remote = run_per_image(functools.partial(operator.mul, 3), items[:-1], executor="ray", progress=False)
        assert remote.results == local.results
        failing = run_per_image(int, ["1", "bad"], executor="ray", progress=False)
        assert failing.results[0] == 1 and failing.failed[0][0] == "bad"
    finally:
        ray.shutdown()


def test_unreachable_ray_address_is_a_clear_error():
    import socket

    pytest.importorskip("ray")
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(PseudoLabelsError, match="cannot connect to a Ray cluster"):
        run_per_image(double, [1, 2], executor="ray", ray_address=f"127.0.0.1:{port}", progress=False)
    with pytest.raises(PseudoLabelsError, match="expected HOST:PORT"):
        run_per_image(double, [1, 2], executor="ray", ray_address="nonsense", progress=False)


def _torch_threads(_item) -> int:
    import torch

    return torch.get_num_threads()


def test_pool_workers_share_the_cores():
    import os

    torch = pytest.importorskip("torch")
    before = torch.get_num_threads()
    cores = len(os.sched_getaffinity(0))
    s = run_per_image(_torch_threads, [0, 1], workers=2, progress=False)
    assert s.results == [max(1, cores // 2)] * 2
    assert torch.get_num_threads() == before  # the main process is left alone


def test_executor_ray_without_ray_is_a_clear_error(monkeypatch):
    """The ``except ImportError`` path of the Ray executor: a message naming the package."""
    import sys

    from pseudo_labels.core.errors import PseudoLabelsError
    from pseudo_labels.core.runner import run_per_image

    monkeypatch.setitem(sys.modules, "ray", None)
    with pytest.raises(PseudoLabelsError, match="needs the 'ray' package"):
        run_per_image(abs, [1, 2], executor="ray", progress=False)
