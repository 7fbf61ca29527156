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


# --------------------------------------------------------------------------- issue 24: paths and parameters
def test_confine_and_check_name_refuse_escapes(tmp_path):
    import os

    from pseudo_labels.core.paths import check_name, confine

    root = tmp_path / "root"
    (root / "a").mkdir(parents=True)
    assert confine(root, "a/b.png", "entry") == root / "a" / "b.png"
    assert check_name("x/../y", "--name") == "x/../y"
    for bad in ("../x", "a/../../x", "/etc/passwd", ""):
        with pytest.raises(PseudoLabelsError, match="--name"):
            check_name(bad, "--name")
    os.symlink(tmp_path, root / "link")  # a symlink out of the root is resolved and refused
    with pytest.raises(PseudoLabelsError, match=r"split list entry 'link/x': resolves to .* outside"):
        confine(root, "link/x", "split list entry")


def test_refuse_overlap_rules(tmp_path):
    from pseudo_labels.core.paths import refuse_overlap

    data = tmp_path / "data"
    (data / "leftImg8bit").mkdir(parents=True)
    sem = tmp_path / "sem"
    sem.mkdir()
    for out in (sem, sem / "inst", tmp_path):  # equal, inside, containing
        with pytest.raises(PseudoLabelsError, match="inputs are never written"):
            refuse_overlap({"--semantic-dir": sem}, {"--out": out}, register=False)
    refuse_overlap({"--semantic-dir": sem}, {"--out": tmp_path / "inst"}, register=False)
    # a dedicated sub-folder of a data root is fine, the root itself or a data folder is not
    refuse_overlap({}, {"--out": data / "pseudo"}, roots={"--root": data}, register=False)
    for out in (data, data / "leftImg8bit" / "x", tmp_path):
        with pytest.raises(PseudoLabelsError, match="--root"):
            refuse_overlap({}, {"--out": out}, roots={"--root": data}, register=False)
    with pytest.raises(PseudoLabelsError, match="is an input file"):
        refuse_overlap({"--gt-json": tmp_path / "gt.json"}, {}, output_files={"--out": tmp_path / "gt.json"},
                       register=False)


def test_write_layer_refuses_to_replace_registered_inputs_unless_a_manifest_claims_them(tmp_path):
    from pseudo_labels.core import io
    from pseudo_labels.core.paths import guarded, refuse_overlap

    data = tmp_path / "data"
    io.write_bytes(data / "images" / "img.png", b"input")
    io.write_bytes(data / "images" / "ours" / "x.png", b"old")
    io.write_manifest(data / "images" / "ours", "stage", {}, uses_ground_truth=False)
    with guarded():
        refuse_overlap({}, {"--out": tmp_path / "out"}, roots={"--root": data})
        with pytest.raises(PseudoLabelsError, match="img.png: exists inside the input folder"):
            io.write_bytes(data / "images" / "img.png", b"overwritten")
        io.write_bytes(data / "images" / "ours" / "x.png", b"new")  # claimed by our manifest
        io.write_bytes(data / "images" / "new.png", b"new file")  # a new file replaces nothing
        io.write_bytes(data / "pseudo" / "c.npz", b"1")
        io.write_bytes(data / "pseudo" / "c.npz", b"2")  # beside the data folders: ours to replace
    assert (data / "images" / "img.png").read_bytes() == b"input"
    assert (data / "images" / "ours" / "x.png").read_bytes() == b"new"
    io.write_bytes(data / "images" / "img.png", b"outside a command: not registered")


def test_validate_config_one_check_for_every_config():
    from dataclasses import dataclass

    from pseudo_labels.core.validate import validate_config

    @dataclass(frozen=True)
    class Cfg:
        lr: float = 0.1
        epochs: int = 1
        grad_thresholds: tuple = (0.1,)
        output_subdir: str | None = None
        ratio: float = 0.5

        def __post_init__(self):
            validate_config(self)

    Cfg()
    for kw, msg in [({"lr": float("nan")}, "--lr / lr nan: must be a finite number"),
                    ({"lr": -1.0}, "--lr / lr -1.0: must be a finite number > 0"),
                    ({"epochs": 0}, "--epochs / epochs 0: must be a whole number >= 1"),
                    ({"grad_thresholds": (0.1, -1.0)}, "grad_thresholds -1.0"),
                    ({"grad_thresholds": ()}, "needs at least one value"),
                    ({"output_subdir": "../x"}, "leaves its folder"),
                    ({"ratio": float("inf")}, "--ratio / ratio inf: must be a finite number")]:
        with pytest.raises(PseudoLabelsError, match=msg.replace("(", r"\(").replace(")", r"\)")):
            Cfg(**kw)
