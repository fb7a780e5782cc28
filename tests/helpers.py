"""Shared helpers for the CLI / robustness tests: a tiny random checkpoint and an in-process CLI runner."""
from __future__ import annotations

import contextlib
import io
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

#: The ``found`` command of the package under test, for subprocesses: this interpreter's ``-m found``,
#: never whatever ``found`` comes first on PATH.
FOUND_COMMAND = [sys.executable, "-m", "found"]

#: A deliberately small ViT (patch 8, 64-d, 2 blocks): fast on CPU, same code paths as ViT-S/8.
TINY = dict(patch_size=8, embed_dim=64, depth=2, num_heads=2)


@dataclass(frozen=True)
class Tiny:
    """Paths of the tiny backbone and head checkpoints."""

    vit: Path
    head: Path

    def args(self) -> list[str]:
        """Model options for ``found segment`` that use these files and no network."""
        return ["--model", "auto", "--weights", str(self.vit), "--head", str(self.head), "--no-progress", "--device", "cpu"]


def write_tiny_checkpoint(folder: Path) -> Tiny:
    """Save a seeded random ViT state dict (torch.save) and a FOUND head into ``folder``."""
    import torch

    from found.hub.build import save_head
    from found.model.backbone import VisionTransformer
    from found.model.head import FoundHead

    folder.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    vit = VisionTransformer(**TINY)
    torch.save(vit.state_dict(), folder / "vit.pth")
    save_head(FoundHead(TINY["embed_dim"]), folder / "head.pt")
    return Tiny(folder / "vit.pth", folder / "head.pt")


@pytest.fixture(scope="session")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Tiny:
    return write_tiny_checkpoint(tmp_path_factory.mktemp("tiny_ckpt"))


@dataclass
class CliResult:
    code: int
    out: str
    err: str
    report: dict | None = None  # ``found segment --report`` JSON, when the run got that far

    @property
    def counts(self) -> tuple[int, int, int, int]:
        """(ok, skipped, failed, not processed) from the structured run report."""
        r = self.report
        assert r is not None, f"no run report (exit {self.code}): {self.err}"
        return r["ok"], r["skipped"], len(r["failed"]), r["not_processed"]

    def failed(self) -> dict[str, str]:
        """Input → reason, from the structured run report."""
        assert self.report is not None, self.err
        return {f["input"]: f["reason"] for f in self.report["failed"]}


def run_cli(argv: list[str]) -> CliResult:
    """``found.cli.main.main(argv)`` in-process with stdout/stderr captured; SystemExit becomes a code.
    ``found segment`` runs also write their report as JSON (``--report``), read back into ``report``."""
    import json
    import tempfile

    from found.cli.main import main

    out, err = io.StringIO(), io.StringIO()
    with tempfile.TemporaryDirectory(prefix="found-report-") as tmp:
        report_path = Path(tmp) / "report.json"
        if argv[:1] == ["segment"] and "--report" not in argv and "--help" not in argv:
            argv = [*argv, "--report", str(report_path)]
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                code = main(argv)
            except SystemExit as e:  # argparse usage errors
                code = e.code if isinstance(e.code, int) else 1
        report = json.loads(report_path.read_text()) if report_path.is_file() else None
    return CliResult(code, out.getvalue(), err.getvalue(), report)


def noise_image(w: int, h: int, mode: str = "RGB", seed: int = 0) -> Image.Image:
    """A random image of the given size and mode (a coloured square on noise, so masks are not trivial)."""
    rng = np.random.default_rng(seed)
    a = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    a[h // 4 : 3 * h // 4, w // 4 : 3 * w // 4] = (230, 40, 30)
    im = Image.fromarray(a)
    return im if mode == "RGB" else im.convert(mode)


def leftovers(folder: Path) -> list[Path]:
    """Temporary files of atomic writes left anywhere under ``folder`` (there should be none)."""
    return sorted(p for p in folder.rglob("*") if p.name.endswith(".part"))
