
import numpy as np
import pytest

from pseudo_labels.core import io
from pseudo_labels.core.errors import InputFileError, PseudoLabelsError


def test_png_round_trip_all_kinds(tmp_path):
    rng = np.random.default_rng(0)
    for arr in (
        rng.integers(0, 256, (17, 23), dtype=np.uint8),
        rng.integers(0, 65536, (17, 23), dtype=np.uint16),
        rng.integers(0, 256, (17, 23, 3), dtype=np.uint8),
    ):
        p = tmp_path / f"a_{arr.dtype}_{arr.ndim}.png"
        io.write_png(p, arr)
        back = io.read_png(p)
        assert back.dtype == arr.dtype and np.array_equal(back, arr)


def test_rgb_png_is_rgb_order_for_pillow(tmp_path):
    from PIL import Image

    arr = np.zeros((2, 2, 3), np.uint8)
    arr[..., 0] = 200  # red
    io.write_png(tmp_path / "r.png", arr)
    assert np.array(Image.open(tmp_path / "r.png"))[0, 0].tolist() == [200, 0, 0]


def test_panoptic_id_colour_round_trip():
    ids = np.array([[0, 7, 26001], [26002, 24000, 16777215]], np.int64)
    assert np.array_equal(io.rgb_to_id(io.id_to_rgb(ids)), ids)


def test_read_png_errors_name_the_file(tmp_path):
    with pytest.raises(InputFileError, match="missing.png: file not found"):
        io.read_png(tmp_path / "missing.png")
    (tmp_path / "text.png").write_text("hello")
    with pytest.raises(InputFileError, match="text.png: not a PNG"):
        io.read_png(tmp_path / "text.png")
    good = tmp_path / "good.png"
    io.write_png(good, np.ones((64, 64), np.uint8))
    (tmp_path / "trunc.png").write_bytes(good.read_bytes()[:40])
    with pytest.raises(InputFileError, match="trunc.png"):
        io.read_png(tmp_path / "trunc.png")


def test_atomic_write_leaves_nothing_on_failure(tmp_path):
    target = tmp_path / "out" / "x.json"
    with pytest.raises(RuntimeError):
        with io.atomic_path(target) as tmp:
            tmp.write_text("partial")
            raise RuntimeError("boom")
    assert not target.exists()
    assert list((tmp_path / "out").iterdir()) == []


def test_json_and_npy(tmp_path):
    io.write_json(tmp_path / "a.json", {"x": np.int64(3), "y": np.float32(0.5), "z": np.arange(2)})
    assert io.read_json(tmp_path / "a.json") == {"x": 3, "y": 0.5, "z": [0, 1]}
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(InputFileError, match="bad.json: malformed JSON"):
        io.read_json(tmp_path / "bad.json")
    io.write_npy(tmp_path / "d.npy", np.eye(3, dtype=np.float32))
    assert io.read_npy(tmp_path / "d.npy").dtype == np.float32


def test_manifest_and_prepare_output_dir(tmp_path):
    params = {"k": 80, "size": (512, 1024)}
    assert io.prepare_output_dir(tmp_path, "stage", params) is True  # fresh folder
    io.write_manifest(tmp_path, "stage", params, uses_ground_truth={"mapping": "majority"})
    m = io.read_manifest(tmp_path)
    assert m["uses_ground_truth"] is True and m["ground_truth_use"] == {"mapping": "majority"}
    assert m["parameters"]["size"] == [512, 1024]
    assert io.prepare_output_dir(tmp_path, "stage", dict(params)) is True
    with pytest.raises(PseudoLabelsError, match="different parameters k"):
        io.prepare_output_dir(tmp_path, "stage", {"k": 40, "size": (512, 1024)})
    with pytest.raises(PseudoLabelsError, match="different stage"):
        io.prepare_output_dir(tmp_path, "other", params)
    assert io.prepare_output_dir(tmp_path, "stage", {"k": 40, "size": (512, 1024)}, overwrite=True) is False


def test_full_disk_or_unwritable_folder_is_a_clear_error(tmp_path, monkeypatch):
    import errno
    import os

    def no_space(src, dst):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(io.os, "replace", no_space)
    with pytest.raises(PseudoLabelsError, match="x.json: cannot write output .No space left on device"):
        io.write_json(tmp_path / "x.json", {"a": 1})
    assert list(tmp_path.iterdir()) == []  # no partial or temporary file left
    monkeypatch.undo()
    (tmp_path / "blocker").write_text("a file where a folder should be")
    with pytest.raises(PseudoLabelsError, match="cannot create output folder"):
        io.write_json(tmp_path / "blocker" / "x.json", {})


def test_read_png_without_pyspng_uses_opencv(tmp_path, monkeypatch):
    """The ``except ImportError`` path of read_png: OpenCV decodes the same pixels."""
    import sys

    rgb = np.random.default_rng(0).integers(0, 256, (7, 9, 3), dtype=np.uint8)
    gray16 = np.random.default_rng(1).integers(0, 65535, (5, 4), dtype=np.uint16)
    io.write_png(tmp_path / "rgb.png", rgb)
    io.write_png(tmp_path / "g16.png", gray16)
    monkeypatch.setitem(sys.modules, "pyspng", None)  # import pyspng -> ImportError
    np.testing.assert_array_equal(io.read_png(tmp_path / "rgb.png"), rgb)
    np.testing.assert_array_equal(io.read_png(tmp_path / "g16.png"), gray16)


def test_read_png_keeps_a_fourth_channel_on_request_and_drops_grey_alpha(tmp_path, monkeypatch):
    """MFNet stores RGB + thermal in one 4-channel PNG; pyspng decodes a 16-bit grey PNG (a raw
    thermal image) as grey + an opaque alpha channel, which is dropped."""
    import sys

    import cv2

    rgbt = np.random.default_rng(2).integers(0, 256, (5, 6, 4), dtype=np.uint8)
    cv2.imwrite(str(tmp_path / "rgbt.png"), np.ascontiguousarray(rgbt[:, :, [2, 1, 0, 3]]))  # OpenCV writes BGRA
    grey = np.random.default_rng(3).integers(0, 65535, (5, 6), dtype=np.uint16)
    cv2.imwrite(str(tmp_path / "g16.png"), grey)
    for without_pyspng in (False, True):
        if without_pyspng:
            monkeypatch.setitem(sys.modules, "pyspng", None)
        np.testing.assert_array_equal(io.read_png(tmp_path / "rgbt.png", keep_channels=True), rgbt)
        np.testing.assert_array_equal(io.read_png(tmp_path / "rgbt.png"), rgbt[:, :, :3])
        for keep in (False, True):
            np.testing.assert_array_equal(io.read_png(tmp_path / "g16.png", keep_channels=keep), grey)


# --------------------------------------------------------------------------- issue 24: the write layer
def test_atomic_writer_gives_the_umask_mode(tmp_path):
    import os
    import stat

    old = os.umask(0o022)
    try:
        io.write_json(tmp_path / "a.json", {})
        os.umask(0o077)
        io.write_bytes(tmp_path / "b.bin", b"x")
    finally:
        os.umask(old)
    assert stat.S_IMODE(os.stat(tmp_path / "a.json").st_mode) == 0o644
    assert stat.S_IMODE(os.stat(tmp_path / "b.bin").st_mode) == 0o600


def test_read_only_or_unwritable_targets_are_one_line(tmp_path, monkeypatch):
    import errno
    import os

    def denied(*a, **k):
        raise PermissionError(errno.EACCES, os.strerror(errno.EACCES))

    monkeypatch.setattr(io.tempfile, "mkstemp", denied)
    with pytest.raises(PseudoLabelsError, match=r"x.png: cannot write output \(Permission denied\)"):
        io.write_png(tmp_path / "x.png", np.zeros((2, 2), np.uint8))
    assert list(tmp_path.iterdir()) == []


def test_checkpoints_round_trip_byte_identical_and_crafted_pickle_runs_nothing(tmp_path):
    import pickle

    import torch

    obj = {"state": {"w": torch.arange(6.0).reshape(2, 3)}, "meta": '{"epochs": 2}', "epoch": 2}
    io.save_checkpoint(tmp_path / "a.pt", obj)
    io.save_checkpoint(tmp_path / "b.pt", obj)
    assert (tmp_path / "a.pt").read_bytes() == (tmp_path / "b.pt").read_bytes()
    back = io.load_checkpoint(tmp_path / "a.pt")
    assert torch.equal(back["state"]["w"], obj["state"]["w"]) and back["meta"] == obj["meta"]

    marker = tmp_path / "ran"

    class Evil:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    torch.save({"x": Evil()}, tmp_path / "evil.pt", pickle_module=pickle)
    assert not marker.exists()
    with pytest.raises(InputFileError, match=r"evil.pt: checkpoint refused: it names Python objects .GLOBAL \S*open"):
        io.load_checkpoint(tmp_path / "evil.pt")
    assert not marker.exists()
    (tmp_path / "trunc.pt").write_bytes((tmp_path / "a.pt").read_bytes()[:50])
    with pytest.raises(InputFileError, match="trunc.pt: not a readable PyTorch checkpoint"):
        io.load_checkpoint(tmp_path / "trunc.pt")
    with pytest.raises(InputFileError, match="missing.pt: checkpoint not found"):
        io.load_checkpoint(tmp_path / "missing.pt")


def test_require_finite_names_the_file(tmp_path):
    a = np.ones((2, 2), np.float32)
    a[0, 1] = np.nan
    io.write_npy(tmp_path / "d.npy", a)
    assert io.read_npy(tmp_path / "d.npy").shape == (2, 2)
    with pytest.raises(InputFileError, match=r"d.npy: depth map holds 1 NaN/Inf"):
        io.read_npy(tmp_path / "d.npy", finite=True, what="depth map")


def test_single_file_outputs_are_claimed_and_unclaimed_files_never_replaced(tmp_path):
    """Issue 24: inside a command (``guarded``), a file written where no output folder of the run and
    no manifest of ours covers it is recorded (name + sha256) in its folder's claims record; a rerun
    may replace it, a file the user made or edited may not; outside a command nothing changes."""
    import hashlib
    import json

    from pseudo_labels.core.paths import CLAIMS_NAME, guarded, refuse_overlap

    user = tmp_path / "notes.json"
    user.write_bytes(b"user data")
    out = tmp_path / "eval.json"
    with guarded():
        refuse_overlap({}, {}, output_files={"--out": out})
        with pytest.raises(PseudoLabelsError, match=r"notes.json: exists and is not an output of pseudo_labels.*"
                                                    r"choose another output path, or delete the file"):
            io.write_json(user, {"a": 1})
        io.write_json(out, {"run": 1})
        record = json.loads((tmp_path / CLAIMS_NAME).read_bytes())
        assert record["tool"] == "pseudo_labels"
        assert record["files"] == {"eval.json": hashlib.sha256(out.read_bytes()).hexdigest()}
        io.write_json(out, {"run": 2})  # a rerun over its own output
        io.write_bytes(tmp_path / "eval.csv", b"a,b\n")  # a companion beside it: claimed too
        io.write_bytes(tmp_path / "eval.csv", b"a,b\n1,2\n")
        assert set(json.loads((tmp_path / CLAIMS_NAME).read_bytes())["files"]) == {"eval.json", "eval.csv"}
        out.write_text('{"edited": true}\n')  # the user edits our output: no longer ours
        with pytest.raises(PseudoLabelsError, match="eval.json: exists and is not an output"):
            io.write_json(out, {"run": 3})
        folder = tmp_path / "folder_out"  # inside an output folder of the run: as before, no claims
        refuse_overlap({}, {"--out-dir": folder})
        (folder / "sub").mkdir(parents=True)
        (folder / "sub" / "x.png").write_bytes(b"old")
        io.write_bytes(folder / "sub" / "x.png", b"new")
        ours = tmp_path / "ours"  # a folder our manifest covers: as before, no claims
        io.write_manifest(ours, "stage", {}, uses_ground_truth=False)
        (ours / "y.json").write_bytes(b"old")
        io.write_bytes(ours / "y.json", b"new")
        fake = tmp_path / "fake"  # a claims record that is not ours claims nothing
        fake.mkdir()
        refuse_overlap({}, {}, output_files={"--out": fake / "z"})
        (tmp_path / "elsewhere").mkdir()
        (tmp_path / "elsewhere" / "other").write_bytes(b"beside no named output: as before")
        io.write_bytes(tmp_path / "elsewhere" / "other", b"replaced")
        (fake / CLAIMS_NAME).write_text(json.dumps({"files": {"z": "0"}}))
        (fake / "z").write_bytes(b"z")
        with pytest.raises(PseudoLabelsError, match="z: exists and is not an output"):
            io.write_bytes(fake / "z", b"new")
    assert user.read_bytes() == b"user data" and out.read_text() == '{"edited": true}\n'
    assert not (folder / CLAIMS_NAME).exists() and not (folder / "sub" / CLAIMS_NAME).exists()
    assert not (ours / CLAIMS_NAME).exists() and (ours / "y.json").read_bytes() == b"new"
    assert not (tmp_path / "elsewhere" / CLAIMS_NAME).exists()
    io.write_bytes(user, b"outside a command: library calls are not guarded")
    assert user.read_bytes().startswith(b"outside")


def test_scratch_dir_and_replace_dir(tmp_path):
    """Folders written by other tools: made in a scratch folder (removed afterwards, the umask's mode),
    put in place by replace_dir (an old folder replaced, its files gone); OS errors are one line."""
    import os
    import stat

    dest = tmp_path / "a" / "pngs"
    dest.mkdir(parents=True)
    (dest / "stale.png").write_bytes(b"old")
    old = os.umask(0o027)
    try:
        with io.scratch_dir(tmp_path / "a") as work:
            assert stat.S_IMODE(work.stat().st_mode) == 0o750
            (work / "pngs").mkdir(mode=0o700)
            (work / "pngs" / "x.png").write_bytes(b"new")
            os.chmod(work / "pngs" / "x.png", 0o600)  # as a worker process with another umask leaves it
            io.replace_dir(dest, work / "pngs")
    finally:
        os.umask(old)
    assert sorted(p.name for p in dest.iterdir()) == ["x.png"] and stat.S_IMODE(dest.stat().st_mode) == 0o750
    assert stat.S_IMODE((dest / "x.png").stat().st_mode) == 0o640
    assert sorted(p.name for p in (tmp_path / "a").iterdir()) == ["pngs"]  # no scratch or old folder left
    with pytest.raises(PseudoLabelsError) as err, io.scratch_dir(tmp_path / "a", "cannot write the thing"):
        raise OSError(28, "No space left on device", str(tmp_path / "a" / "f"))
    assert str(err.value) == f"{tmp_path / 'a' / 'f'}: cannot write the thing (No space left on device)"
    assert sorted(p.name for p in (tmp_path / "a").iterdir()) == ["pngs"]
    (tmp_path / "file").write_text("x")
    with pytest.raises(PseudoLabelsError, match=r"cannot create output folder \((Not a directory|File exists)\)$"):
        with io.scratch_dir(tmp_path / "file" / "sub"):
            pass


def test_replace_dir_refuses_a_registered_input_folder(tmp_path):
    from pseudo_labels.core.paths import guarded, protect

    inp = tmp_path / "data" / "pngs"
    inp.mkdir(parents=True)
    (inp / "mine.png").write_bytes(b"the user's")
    with guarded():
        protect([tmp_path / "data"])
        with io.scratch_dir(tmp_path / "data") as work:
            (work / "new").mkdir()
            with pytest.raises(PseudoLabelsError, match="not an output of pseudo_labels"):
                io.replace_dir(inp, work / "new")
    assert [p.name for p in inp.iterdir()] == ["mine.png"] and (inp / "mine.png").read_bytes() == b"the user's"
