"""The short chaos test (issue 15): one seeded run of two real processes under random SIGKILLs
of either side (the edge before its first checkpoint, either side mid-run or while writing a
checkpoint) and hostile connections, which must end as the uninterrupted run. The 20-seed soak
is ``scripts/chaos_soak.py`` (result in ``results/chaos/``)."""

from __future__ import annotations

from hierbench.methods import run
from tests.methods.chaos import chaos_config, check_against, run_chaos


def test_chaos_short(cifar10_root, tmp_path):
    cfg = chaos_config(cifar10_root, epochs=3)
    reference = run(cfg.replace(checkpoint_every=0), progress=False)
    result = run_chaos(cfg, tmp_path, seed=1, events=3, deadline_s=150)
    kinds = [e["action"] for e in result["events"]]
    assert kinds[0] == "kill_edge" and result["events"][0]["before_first_checkpoint"], kinds
    assert kinds[1] in ("connect_close", "garbage"), kinds
    assert check_against(result["record"], reference) == []
