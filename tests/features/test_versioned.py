"""Versioned folders: publishing keeps the version it replaced, and restoring returns to it."""

from __future__ import annotations

import pytest

from features import versioned


def publish(root, text: str):
    staging = versioned.staging_dir(root)
    (staging / "table.txt").write_text(text)
    return versioned.publish(staging)


def test_restore_returns_to_the_version_that_was_current(tmp_path) -> None:
    first = publish(tmp_path, "first")
    second = publish(tmp_path, "second")
    versioned.restore(tmp_path, first)
    assert versioned.current(tmp_path) == first
    assert (tmp_path / versioned.CURRENT / "table.txt").read_text() == "first"
    versioned.restore(tmp_path, second)
    assert (tmp_path / versioned.CURRENT / "table.txt").read_text() == "second"


def test_the_replaced_version_survives_pruning(tmp_path) -> None:
    first = publish(tmp_path, "first")
    publish(tmp_path, "second")
    versioned.restore(tmp_path, first)
    # A failed night published `second`, then put `first` back; the next publish keeps it.
    third = publish(tmp_path, "third")
    assert first.exists()
    versioned.restore(tmp_path, first)
    assert versioned.current(tmp_path) == first
    assert third.exists()


def test_restore_to_nothing_and_to_a_missing_version(tmp_path) -> None:
    first = publish(tmp_path, "first")
    versioned.restore(tmp_path, None)
    assert versioned.current(tmp_path) is None
    with pytest.raises(FileNotFoundError, match="no such version"):
        versioned.restore(tmp_path, tmp_path / "v-missing")
    versioned.restore(tmp_path, first)
    assert versioned.current(tmp_path) == first
