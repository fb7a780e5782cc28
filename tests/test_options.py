"""Each fact checked once: one frozen RunOptions for the library, the CLI, the server and Ray (the
library's errors name the field, the CLI words it as the flag), and one image normaliser."""
from __future__ import annotations

import ast
import asyncio
import dataclasses
import io
import pickle
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import found
from found.engine import Engine, segment
from found.errors import FoundError, OptionsError
from found.io.images import LoadedImage, PixelShapeError, PixelTypeError, read_image, to_rgb_array
from found.model.instances import InstanceFilter
from found.options import DEFAULT_MAX_SIDE, RULES, RunOptions, check
from helpers import noise_image, run_cli, tiny  # noqa: F401  (fixture)

PACKAGE = Path(found.__file__).parent

#: (field, a bad value, the flag of ``found segment`` that sets it, the same bad value on the command line)
BAD = [
    ("batch_size", 0, "--batch-size", "0"),
    ("max_side", -5, "--max-side", "-5"),
    ("workers", -1, "--workers", "-1"),
    ("every", 0, "--every", "0"),
    ("smooth", 1.5, "--smooth", "1.5"),
    ("smooth", 0.0, "--smooth", "0"),
    ("max_instances", 0, "--max-instances", "0"),
    ("min_area", -1.0, "--min-area", "-1"),
    ("min_score", 1.5, "--min-score", "1.5"),
]
#: Bad values argparse cannot see (its choices and types stop the others first).
BAD_LIBRARY_ONLY = [("mode", "all"), ("edges", "sharp"), ("refine", "yes"), ("batch_size", 2.5), ("debug", None)]


@pytest.fixture(scope="module")
def model(tiny):  # noqa: F811
    return found.build_found("auto", weights=tiny.vit, head=tiny.head, device="cpu", progress=False)


@pytest.fixture(scope="module")
def picture(tmp_path_factory) -> Path:
    p = tmp_path_factory.mktemp("pic") / "a.png"
    noise_image(40, 32).save(p)
    return p


# ------------------------------------------------------------------ the library names the field
@pytest.mark.parametrize("field,value", [(f, v) for f, v, _, _ in BAD] + BAD_LIBRARY_ONLY)
def test_a_bad_option_is_a_library_error_naming_the_field(field, value):
    with pytest.raises(OptionsError) as e:
        RunOptions(**{field: value})
    assert e.value.field == field and str(e.value).startswith(f"{field} ") and "--" not in str(e.value)
    assert isinstance(e.value, FoundError) and isinstance(e.value, ValueError) and e.value.exit_code == 2
    assert "\n" not in str(e.value) and repr(value) in str(e.value)


@pytest.mark.parametrize("field,value", [(f, v) for f, v, _, _ in BAD] + BAD_LIBRARY_ONLY)
def test_engine_and_segment_keywords_take_the_same_rules(model, field, value):
    """``Engine(model, **keywords)`` and ``found.segment(..., **keywords)`` build a RunOptions: the same error."""
    with pytest.raises(OptionsError) as direct:
        RunOptions(**{field: value})
    for make in (lambda: Engine(model, **{field: value}), lambda: segment([], model, **{field: value})):
        with pytest.raises(OptionsError) as e:
            make()
        assert (e.value.field, str(e.value)) == (direct.value.field, str(direct.value))


def test_an_instance_filter_keyword_is_checked_by_the_same_rule(model):
    with pytest.raises(OptionsError, match="^max_instances") as e:
        Engine(model, instance_filter=InstanceFilter(max_instances=0))
    assert e.value.field == "max_instances"


def test_a_max_side_under_one_patch_names_the_field(model):
    with pytest.raises(OptionsError, match=r"^max_side 4 is smaller than one 8-px patch$") as e:
        Engine(model, max_side=4)
    assert e.value.field == "max_side"


def test_one_rule_per_field_and_the_predictor_uses_them(model):
    assert set(RULES) <= {f.name for f in dataclasses.fields(RunOptions)}
    im = np.zeros((32, 32, 3), np.uint8)
    for kwargs, field in (({"batch_size": 0}, "batch_size"), ({"mode": "several"}, "mode")):
        with pytest.raises(OptionsError) as e:
            model.predict(im, **kwargs)
        with pytest.raises(OptionsError) as same:
            check(field, kwargs[field])
        assert str(e.value) == str(same.value)
    assert check("batch_size", 3) == 3


def test_the_errors_pickle_with_their_field():
    e = pickle.loads(pickle.dumps(OptionsError("batch_size", "must be at least 1, got 0")))
    assert e.field == "batch_size" and str(e) == "batch_size must be at least 1, got 0"


# ------------------------------------------------------------------ the CLI words the flag
@pytest.mark.parametrize("field,value,flag,text", BAD)
def test_the_cli_words_a_bad_option_as_its_flag(tmp_path, tiny, picture, field, value, flag, text):  # noqa: F811
    r = run_cli(["segment", str(picture), "-o", str(tmp_path / "out"), flag, text, *tiny.args()])
    lines = r.err.strip().splitlines()
    assert r.code == 2 and len(lines) == 1 and lines[0].startswith(f"found: error: {flag} "), r.err
    with pytest.raises(OptionsError) as e:
        RunOptions(**{field: value})
    assert lines[0] == f"found: error: {flag} {e.value.detail}"  # the library's words, the field as its flag
    assert not (tmp_path / "out").exists()


def test_a_max_side_under_one_patch_is_worded_with_the_flag(tmp_path, tiny, picture):  # noqa: F811
    r = run_cli(["segment", str(picture), "-o", str(tmp_path / "out"), "--max-side", "4", *tiny.args()])
    assert r.code == 2 and r.err.strip() == "found: error: --max-side 4 is smaller than one 8-px patch"


def test_the_field_to_flag_table_is_the_parsers(tiny):  # noqa: F811
    """Every run option has a flag in the table, and that flag is ``found segment``'s option of that field."""
    from found.cli.common import FIELD_FLAGS, cli_message
    from found.cli.main import build_parser

    parser = build_parser()
    segment_parser = parser._subparsers._group_actions[0].choices["segment"]
    dests = {opt: a.dest for a in segment_parser._actions for opt in a.option_strings}
    for f in dataclasses.fields(RunOptions):
        assert dests[FIELD_FLAGS[f.name]] == f.name
    assert cli_message(OptionsError("min_area", "must be >= 0, got -1")) == "--min-area must be >= 0, got -1"
    said = "model='auto' needs a file: pass weights=PATH or set FOUND_BACKBONE=PATH, or coarse=True (max_side=400)"
    assert cli_message(FoundError(said)) == ("--model auto needs a file: pass --weights PATH or set FOUND_BACKBONE=PATH, "
                                              "or --coarse (--max-side 400)")
    assert cli_message(FoundError("/photos/mode=x.png: bad")) == "/photos/mode=x.png: bad"  # paths are left alone


def test_ray_and_serve_flags_are_worded_too(tmp_path, tiny, picture):  # noqa: F811
    pytest.importorskip("uvicorn")
    r = run_cli(["segment", str(picture), "-o", str(tmp_path / "out"), "--ray", "--batch-size", "0"])
    assert r.code == 2 and r.err.strip() == "found: error: --batch-size must be at least 1, got 0"
    r = run_cli(["segment", str(picture), "-o", str(tmp_path / "out"), "--ray", "--cpus-per-worker", "0"])
    assert r.code == 2 and r.err.strip() == "found: error: --cpus-per-worker must be more than 0, got 0.0"
    for argv, said in ((["--max-side", "-5"], "--max-side must be 0 (no cap) or a positive number of pixels, got -5"),
                       (["--max-batch", "0"], "--max-batch must be at least 1, got 0"),
                       (["--queue-size", "0"], "--queue-size must be at least 1, got 0")):
        r = run_cli(["serve", *argv])
        assert r.code == 2 and r.err.strip() == f"found: error: {said}", r.err
    assert not (tmp_path / "out").exists()


# ------------------------------------------------------------------ one frozen object, shared
def test_run_options_are_frozen_validated_and_picklable():
    o = RunOptions(mode="single", batch_size=2, max_side=0, min_area=0.01)
    with pytest.raises(dataclasses.FrozenInstanceError):
        o.batch_size = 3  # type: ignore[misc]
    assert o.max_side is None  # 0 = no cap, one spelling
    assert o.instance_filter == InstanceFilter(min_area=0.01) and RunOptions().instance_filter is None
    back = pickle.loads(pickle.dumps(o))
    assert back == o and back.instance_filter == o.instance_filter
    assert o.replace(refine=True).refine and not o.refine
    with pytest.raises(OptionsError, match="^batch_size"):
        o.replace(batch_size=0)
    assert RunOptions().max_side == DEFAULT_MAX_SIDE and found.RunOptions is RunOptions
    with pytest.raises(TypeError, match="unknown run option"):
        RunOptions.from_keywords(batchsize=2)


def test_engine_holds_the_options_and_keywords_build_the_same(model):
    o = RunOptions(mode="single", batch_size=3, workers=0, max_side=128, edges="bilinear", max_instances=2)
    e = Engine(model, o)
    assert e.options is o and (e.mode, e.batch_size, e.workers, e.max_side, e.edges) == ("single", 3, 0, 128, "bilinear")
    kw = Engine(model, mode="single", batch_size=3, workers=0, max_side=128, edges="bilinear",
                instance_filter=InstanceFilter(max_instances=2))
    assert kw.options == o and e.instance_filter == InstanceFilter(max_instances=2)
    for extra in ({"batch_size": 4}, {"min_area": 0.5}):
        with pytest.raises(TypeError, match="not both"):
            Engine(model, o, **extra)
    with pytest.raises(TypeError, match="unknown run option 'batchsize'"):
        Engine(model, batchsize=4)
    a = noise_image(48, 40)
    [r1] = list(segment([a], model, o))
    [r2] = list(segment([a], model, **{"mode": "single", "batch_size": 3, "workers": 0, "max_side": 128}))
    assert np.array_equal(r1.prediction.mask, r2.prediction.mask)


def test_server_cli_and_ray_hold_the_same_object_type(tiny):  # noqa: F811
    pytest.importorskip("fastapi")
    from found.cli.common import check_batch_options
    from found.cli.main import build_parser
    from found.cli.serve import settings_from_args
    from found.ray import RunConfig
    from found.serve import Settings

    s = settings_from_args(build_parser().parse_args(["serve", "--mode", "single", "--max-side", "0", "--max-batch", "4",
                                                      "--workers", "3"]))
    assert type(s.options) is RunOptions and s.workers == 3
    assert s.options == RunOptions(mode="single", max_side=None, batch_size=4, workers=0)
    assert Settings().options == RunOptions(batch_size=Settings().max_batch, workers=0)
    args = build_parser().parse_args(["segment", "x.png", "-o", "out", "--batch-size", "2", "--min-score", "0.5",
                                      "--every", "3", *tiny.args()])
    cli = check_batch_options(args)
    assert type(cli) is RunOptions and (cli.batch_size, cli.min_score, cli.every) == (2, 0.5, 3)
    config = RunConfig({}, "out", ("mask",), cli.replace(workers=0))
    back = pickle.loads(pickle.dumps(config))  # what each actor receives
    assert type(back.options) is RunOptions and back.options == config.options
    assert back.batch_size == 2 and back.max_side == DEFAULT_MAX_SIDE  # the options' fields read through
    assert RunConfig({}, "out").options == RunOptions(workers=0)


def test_ray_checks_its_options_before_anything_starts(tmp_path):
    from found.ray import segment_with_ray

    for kwargs, field in (({"batch_size": 0}, "batch_size"), ({"workers": 0}, "workers"),
                          ({"cpus_per_worker": 0}, "cpus_per_worker"), ({"gpus_per_worker": -1}, "gpus_per_worker")):
        with pytest.raises(OptionsError) as e:
            segment_with_ray([str(tmp_path)], tmp_path / "out", {}, **kwargs)
        assert e.value.field == field and str(e.value).startswith(field)
    assert not (tmp_path / "out").exists()


def test_the_server_answers_a_bad_option_with_422_naming_the_field(model):
    pytest.importorskip("fastapi")
    pytest.importorskip("httpx")
    from found.serve import Settings, create_app
    from serve_support import asgi_client, png

    data = png(noise_image(48, 40))
    app = create_app(model, Settings(options=RunOptions(mode="single")))

    async def go():
        async with asgi_client(app) as c:
            post = lambda **p: c.post("/v1/segment", content=data, params=p)  # noqa: E731
            return [await post(mode="nope"), await post(refine="maybe"), await post(mode="multi"), await post(),
                    await c.get("/readyz"), await c.get("/openapi.json")]

    bad_mode, bad_refine, ok, default, ready, spec = asyncio.run(go())
    with pytest.raises(OptionsError) as e:
        RunOptions(mode="nope")
    assert bad_mode.status_code == 422 and bad_mode.json()["detail"] == str(e.value)
    assert bad_refine.status_code == 422 and "refine" in bad_refine.json()["detail"]
    assert ok.status_code == default.status_code == 200 and ready.json()["mode"] == "single"
    params = {p["name"]: p for p in spec.json()["paths"]["/v1/segment"]["post"]["parameters"]}
    assert params["mode"]["schema"]["enum"] == ["multi", "single"]  # documented; checked by the options' rule
    with pytest.raises(OptionsError, match="^max_batch must be at least 1, got 0$"):
        Settings(max_batch=0)
    with pytest.raises(OptionsError, match="^queue_size"):
        Settings(queue_size=0)


# ------------------------------------------------------------------ one image normaliser
def _same_picture(rgb: np.ndarray, tmp_path: Path) -> list[object]:
    path = tmp_path / "p.png"
    Image.fromarray(rgb).save(path)
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format="PNG")
    return [path, str(path), buf.getvalue(), bytearray(buf.getvalue()), Image.fromarray(rgb), rgb,
            np.dstack([rgb, np.full(rgb.shape[:2], 255, np.uint8)]), torch.from_numpy(rgb.copy())]


def test_one_normaliser_gives_the_same_array_for_every_kind_of_input(tmp_path):
    rgb = np.array(noise_image(37, 29))
    for source in _same_picture(rgb, tmp_path):
        a = to_rgb_array(source)
        assert a.dtype == np.uint8 and a.flags.c_contiguous and np.array_equal(a, rgb), type(source)
    grey = rgb[..., 0].copy()
    for source in (grey, grey[..., None], Image.fromarray(grey)):
        assert np.array_equal(to_rgb_array(source), np.repeat(grey[..., None], 3, axis=2))
    assert to_rgb_array(rgb) is rgb  # a contiguous uint8 RGB array is not copied


def test_every_surface_takes_images_through_it(model, tmp_path):
    from found.predictor import as_rgb_array
    from found.refine.inputs import as_rgb_uint8

    rgb = np.array(noise_image(40, 32))
    assert as_rgb_array is to_rgb_array
    for source in _same_picture(rgb, tmp_path)[:6]:
        assert np.array_equal(read_image(source).rgb(), rgb)  # the engine's decoder (and the server's)
        assert torch.equal(as_rgb_uint8(source), torch.from_numpy(rgb))  # the solver's inputs
        [r] = list(Engine(model, workers=0).run([source]))
        assert r.ok and np.array_equal(r.rgb(), rgb)
    preds = model.predict([Image.fromarray(rgb), rgb, tmp_path / "p.png"])
    assert all(np.array_equal(p.soft, preds[0].soft) for p in preds)


def test_the_normaliser_refuses_what_is_not_an_image_in_one_line():
    for bad, kind, words in ((np.zeros((8, 8, 3), np.float32), PixelTypeError, "expected uint8 pixels, got float32"),
                             (np.zeros((8, 8, 2), np.uint8), PixelShapeError, "got shape (8, 8, 2)"),
                             (np.zeros((0, 8, 3), np.uint8), PixelShapeError, "empty image"),
                             ([[1, 2]], PixelTypeError, "unsupported image type list")):
        with pytest.raises(kind, match=re.escape(words)) as e:
            to_rgb_array(bad)
        assert "\n" not in str(e.value)
    with pytest.raises(PixelShapeError, match="channels"):
        to_rgb_array(np.zeros((8, 8, 4), np.uint8), alpha=False)
    with pytest.raises(PixelTypeError, match=r"^<x>: expected uint8"):
        to_rgb_array(np.zeros((8, 8), np.int64), name="<x>")
    li = LoadedImage(None, Image.fromarray(np.zeros((4, 4, 4), np.uint8)), (4, 4))
    assert li.rgb().shape == (4, 4, 3) and li.alpha() is not None


# ------------------------------------------------------------------ the library never words a flag
#: Research modules driven by their own commands, still worded with flags (to be moved to field names).
STILL_WORDED_WITH_FLAGS = {"bench/models.py", "evaluate/datasets.py", "evaluate/retrieval.py", "train/config.py",
                           "train/data.py", "train/loop.py", "train/monitor.py"}


def test_the_library_never_words_a_cli_flag():
    """Messages raised or noted outside found/cli name fields and parameters, never ``--flags``."""
    flag = re.compile(r"(?<![\w-])--[a-z]")
    calls = {"require", "require_encoder", "append", "existing_file", "resolve", "warn"}
    bad = []
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = str(path.relative_to(PACKAGE))
        if rel.startswith("cli/") or rel in STILL_WORDED_WITH_FLAGS:
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            func = getattr(node, "func", None)
            if isinstance(node, ast.Raise) or (isinstance(node, ast.Call) and getattr(func, "id", getattr(func, "attr", None)) in calls):
                bad += [f"{rel}:{c.lineno}: {c.value!r}" for c in ast.walk(node)
                        if isinstance(c, ast.Constant) and isinstance(c.value, str) and flag.search(c.value)]
    assert not bad, bad
