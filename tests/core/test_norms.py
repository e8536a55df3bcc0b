"""The normalisation vocabulary: names, aliases, and how an ensemble is normalised by default."""

import pytest

from lsmap.core.norms import ensemble_norm, norm_mode, trained_norm
from lsmap.errors import InputError


def test_names_and_aliases():
    assert [norm_mode(v) for v in ("own", "separated", "scene", "target", "model", "global")] == \
        ["own", "own", "own", "own", "model", "model"]
    assert norm_mode("auto", auto=True) == "auto"
    with pytest.raises(InputError, match="choose one of: own, model$"):
        norm_mode("auto")


def test_auto_follows_how_the_members_were_trained():
    assert trained_norm(None) == "own" and trained_norm({}) == "own" and trained_norm({"norm": "global"}) == "model"
    assert ensemble_norm("auto", [{"norm": "global"}, {"norm": "model"}]) == "model"
    assert ensemble_norm("auto", [{"norm": "global"}, {"norm": "separated"}]) == "own", "mixed: the scene's own"
    assert ensemble_norm("auto", [None]) == "own"
    assert ensemble_norm("own", [{"norm": "global"}]) == "own", "an explicit choice wins"
    assert ensemble_norm("scene", []) == "own"
