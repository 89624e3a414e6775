"""ppise.utils.arrays and ppise.utils.fileio: one l2_normalize, one atomic write, one writable-dir probe."""
from __future__ import annotations

import os

import numpy as np
import pytest

from ppise.errors import TrainingError
from ppise.utils.arrays import l2_normalize
from ppise.utils.fileio import atomic_save, atomic_write, ensure_writable_dir


def test_l2_normalize_rows_columns_and_zero_rows():
    x = np.array([[3.0, 4.0], [0.0, 0.0]], dtype=np.float64)
    out = l2_normalize(x)
    assert out.dtype == np.float32
    np.testing.assert_allclose(out, [[0.6, 0.8], [0.0, 0.0]], atol=1e-7)
    cols = l2_normalize(x.T, axis=0)
    np.testing.assert_allclose(cols, out.T, atol=1e-7)
    rng = np.random.default_rng(0)
    np.testing.assert_allclose(np.linalg.norm(l2_normalize(rng.normal(size=(5, 7))), axis=1), 1.0, atol=1e-6)


def test_atomic_write_replaces_whole_and_leaves_no_temp(tmp_path):
    path = tmp_path / "a.json"
    path.write_text("old")
    with atomic_write(str(path), encoding="utf-8") as f:
        f.write("new")
        assert path.read_text() == "old"  # nothing visible before the block ends
    assert path.read_text() == "new"
    with atomic_write(str(tmp_path / "b.bin"), "wb") as f:
        f.write(b"\x00\x01")
    assert (tmp_path / "b.bin").read_bytes() == b"\x00\x01"
    assert sorted(os.listdir(tmp_path)) == ["a.json", "b.bin"]


def test_atomic_write_error_keeps_old_file_and_removes_temp(tmp_path):
    path = tmp_path / "a.txt"
    path.write_text("old")
    with pytest.raises(RuntimeError, match="boom"):
        with atomic_write(str(path)) as f:
            f.write("half")
            raise RuntimeError("boom")
    assert path.read_text() == "old" and os.listdir(tmp_path) == ["a.txt"]
    with pytest.raises(ValueError, match="mode"):
        with atomic_write(str(path), "a"):
            pass


def test_atomic_save_round_trips_with_paddle_load(tmp_path):
    paddle = pytest.importorskip("paddle")
    path = str(tmp_path / "w.pdparams")
    atomic_save({"w": paddle.arange(6, dtype="float32").reshape([2, 3])}, path)
    np.testing.assert_array_equal(paddle.load(path)["w"].numpy(), np.arange(6, dtype=np.float32).reshape(2, 3))
    assert os.listdir(tmp_path) == ["w.pdparams"]


def test_ensure_writable_dir_creates_and_names_the_key(tmp_path):
    made = str(tmp_path / "out" / "run")
    assert ensure_writable_dir(made, "Global.output_dir") == made and os.listdir(made) == []
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(TrainingError, match=r"Global.output_dir '.*file/sub' is not writable"):
        ensure_writable_dir(str(blocker / "sub"), "Global.output_dir")
