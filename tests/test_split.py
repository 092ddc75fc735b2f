"""The split of a capture's cameras and sequences into training and held-out ones."""

from __future__ import annotations

import pytest

from npga.split import make_split


def test_split_defaults_and_errors(tiny_cache):
    split = make_split(tiny_cache.serials, tiny_cache.sequences)
    assert split.heldout_sequences == ("FREE",) and "FREE" not in split.train_sequences
    assert "222200037" in split.heldout_serials and "222200037" not in split.train_serials
    seqs, serials = split.eval_views("heldout_cameras", tiny_cache.serials)
    assert seqs == ("EXP-1-jaw",) and set(serials) == {"222200046", "222200037", "222200039"}
    with pytest.raises(ValueError, match="no training sequences"):
        make_split(tiny_cache.serials, ("FREE",))
    with pytest.raises(ValueError, match="not in the capture"):
        make_split(tiny_cache.serials, tiny_cache.sequences, heldout_sequences=("NOPE",))
