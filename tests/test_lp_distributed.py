"""LP loss under the launcher: each rank's anchors meet the whole global batch (2 gloo CPU processes)."""
import os
import subprocess
import sys

import numpy as np
import paddle
import pytest

from lp_dist_child import global_batch
from ppise.loss.label_preserving import LabelPreservingLoss
from ppise.utils import dist

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_single_process_gather_is_identity():
    t = paddle.ones([3, 2])
    assert dist.all_gather_with_grad(t) is t and dist.all_gather(t) is t


def test_two_ranks_equal_one_process_on_the_global_batch(tmp_path):
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.path.join(ROOT, "tests"), OMP_NUM_THREADS="1",
               PYTHONWARNINGS="ignore")
    cmd = [sys.executable, "-m", "paddle.distributed.launch", "--nproc_per_node", "2",
           "--log_dir", str(tmp_path / "logs"), os.path.join(ROOT, "tests", "lp_dist_child.py"), str(tmp_path)]
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    if proc.returncode != 0:
        logs = "".join(open(os.path.join(tmp_path, "logs", n), errors="replace").read()[-2000:]
                       for n in sorted(os.listdir(tmp_path / "logs")))
        pytest.fail(f"launch exit {proc.returncode}\n{proc.stderr[-2000:]}\n{logs}")
    ranks = [np.load(os.path.join(tmp_path, f"rank{r}.npz")) for r in range(2)]
    assert all(int(r["world"]) == 2 for r in ranks)

    feats, sup, labels = global_batch(2)
    f = paddle.to_tensor(feats, stop_gradient=False)
    s = paddle.to_tensor(sup, stop_gradient=False)
    y = paddle.to_tensor(labels)
    loss = LabelPreservingLoss(temperature=0.6)(f, s, y, y)
    loss.backward()
    # the global loss is the mean of the ranks' losses; each rank's gradients are those of the sum of
    # the ranks' losses, i.e. world x the global gradients (DataParallel then averages over ranks)
    assert np.mean([float(r["loss"]) for r in ranks]) == pytest.approx(float(loss), rel=1e-6)
    half = labels.size // 2
    for r, got in enumerate(ranks):
        rows = slice(r * half, (r + 1) * half)
        np.testing.assert_allclose(got["f_grad"] / 2, f.grad.numpy()[rows], rtol=1e-5, atol=1e-7)
        np.testing.assert_allclose(got["s_grad"] / 2, s.grad.numpy()[rows], rtol=1e-5, atol=1e-7)
    # and it differs from what a rank would get seeing only its own identities
    own = LabelPreservingLoss(temperature=0.6)(f[:half], s[:half], y[:half], y[:half])
    assert abs(float(own) - float(ranks[0]["loss"])) > 1e-3
