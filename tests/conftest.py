"""Shared fixtures: where the real datasets are, and a per-session data cache."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATASETS = REPO.parent / "shared" / "datasets"


def _root(env: str, default: Path) -> Path | None:
    path = Path(os.environ.get(env, default))
    return path if path.is_dir() else None


def _missing(what: str) -> None:
    """Under CI (``CI=true``) a test that needs real data fails without it; elsewhere it skips."""
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"{what} (CI=true: real-data tests never skip)")
    pytest.skip(what)


@pytest.fixture(scope="session")
def cifar10_root() -> Path:
    """The real CIFAR-10 (image-folder copy); skipped, with the reason, where it is absent
    (failed under CI)."""
    root = _root("HIERBENCH_CIFAR10_ROOT", SHARED_DATASETS / "cifar10-jpeg")
    if root is None:
        _missing("real CIFAR-10 not found: set HIERBENCH_CIFAR10_ROOT")
    return root


@pytest.fixture(scope="session")
def tiny_imagenet_root() -> Path:
    """The real Tiny ImageNet subset (official layout); skipped where it is absent (failed under
    CI)."""
    root = _root("HIERBENCH_TINYIMAGENET_ROOT", SHARED_DATASETS / "tiny-imagenet-200-subset")
    if root is None:
        _missing("real Tiny ImageNet not found: set HIERBENCH_TINYIMAGENET_ROOT")
    return root


@pytest.fixture(scope="session")
def data_cache(tmp_path_factory) -> Path:
    """A decoded-tensor cache private to this test session."""
    return tmp_path_factory.mktemp("hierbench-cache")
