"""found.extras.require: one helper, one wording, each call site's exception type."""
from __future__ import annotations

import sys

import pytest

from found.errors import FoundError, WeightsError
from found.extras import install_hint, require


def test_require_returns_the_module():
    import json

    assert require("json", "x") is json
    assert require("os.path", "x") is sys.modules["os.path"]


def test_a_missing_extra_is_one_line_with_the_install_hint(monkeypatch):
    monkeypatch.setitem(sys.modules, "found_no_such_extra", None)
    with pytest.raises(FoundError) as e:
        require("found_no_such_extra", "video", "reading videos")
    assert str(e.value) == ("reading videos needs the video extra (found_no_such_extra is missing): "
                            "pip install 'found[video]'")
    assert e.value.__cause__ is None and e.value.__suppress_context__


def test_the_caller_chooses_the_exception_type():
    with pytest.raises(WeightsError, match=r"found\[hf\]"):
        require("found_module_that_does_not_exist", "hf", "x.safetensors: reading .safetensors", WeightsError)
    with pytest.raises(ImportError, match=r"pip install 'found\[eval\]'"):
        require("found_module_that_does_not_exist", "eval", error=ImportError)
    assert install_hint("coco") == "pip install 'found[coco]'"
