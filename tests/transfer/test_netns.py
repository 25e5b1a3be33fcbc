"""Kernel-shaped mode: the TCP transport through tc tbf in two network namespaces, beside the
engine's token bucket. Root only; skipped with the reason otherwise."""

from __future__ import annotations

import os
import subprocess

import pytest

from hierbench.transfer import netns


@pytest.fixture
def need_netns():
    reason = netns.unavailable_reason()
    if reason:
        pytest.skip(f"kernel-shaped mode unavailable: {reason}")


def _ours() -> list[str]:
    """This process's namespaces (their names carry its pid): other test runs on the machine
    may create and remove their own meanwhile."""
    out = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    mine = f"{netns._PREFIX}-{os.getpid()}-"
    return [line for line in out.splitlines() if line.startswith(mine)]


def test_reason_when_not_root(monkeypatch):
    monkeypatch.setattr(netns.os, "geteuid", lambda: 1000)
    assert "root" in netns.unavailable_reason()
    with pytest.raises(netns.NetnsUnavailable, match="root"), netns.veth_pair():
        pass


@pytest.mark.netns
def test_namespaces_are_removed_even_on_error(need_netns):
    before = _ours()
    with pytest.raises(RuntimeError, match="boom"), netns.veth_pair() as veth:
        assert veth.ns_a in "\n".join(_ours())
        raise RuntimeError("boom")
    assert _ours() == before


@pytest.mark.netns
@pytest.mark.slow
def test_tc_tbf_beside_the_token_bucket(need_netns):
    rate, nbytes, count = 20e6, 250_000, 6
    before = _ours()
    out = netns.compare(rate, nbytes=nbytes, count=count)
    assert _ours() == before  # cleaned up
    assert "tbf" in out["qdisc"]
    emu, tc = out["emulator"], out["tc"]
    assert emu["all_intact_in_order"] and tc["all_intact_in_order"]
    assert emu["messages"] == tc["messages"] == count
    # Generous bounds (real time, loaded machine). tc counts L2 bytes, so TCP/IP headers cost it
    # ~4 % of goodput that the engine's bucket (payload bytes) does not pay.
    assert 0.85 * rate < emu["goodput_bps"] < 1.1 * rate
    assert 0.75 * rate < tc["goodput_bps"] < 1.05 * rate
    assert 0.75 < out["tc_over_emulator"] < 1.1
    ideal = nbytes * 8 / rate
    for mode in (emu, tc):
        assert 0.5 * ideal < mode["first_message_latency_s"] < 2.0 * ideal
