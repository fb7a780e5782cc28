"""The self-training loop: the authors' schedule, resumable, interruptible and watchable.

``train(backbone, files, cfg, out_dir)`` trains a fresh :class:`FoundHead` on the frozen backbone
and writes into ``out_dir``:

* ``head.pt`` — the final head in the authors' format (``found segment --head head.pt``), and
  ``decoder_weights_niter{n}.pt`` snapshots every ``save_model_freq`` iterations and at the end;
* ``checkpoint.pt`` — the full training state every ``checkpoint_every`` iterations, at the end
  and on Ctrl-C (``resume=True`` continues it; the final head is bit-identical on CPU);
* ``log.csv``, ``loss.png``, ``samples/iter_*.png``, ``eval.jsonl``, ``config.json``,
  ``summary.json`` and, with ``tensorboard=True``, ``tensorboard/``.

As in ``main_found_train.py``, iterations ``0 … max_iter`` are all trained (the authors' loop
stops *after* the step of iteration ``max_iter``), unless ``nb_epochs`` passes run out first.
"""
from __future__ import annotations

import json
import random
import signal
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
from tqdm.auto import tqdm

from ..errors import FoundError
from ..hub.build import save_head
from ..io.files import atomic_write_text
from ..model.head import FoundHead
from ..model.preprocess import IMAGENET_MEAN, IMAGENET_STD, normalize
from ..runtime.device import as_device, training_precision
from .checkpoint import CHECKPOINT_NAME, TrainState, check_compatible, load_state, rng_state, save_state, set_rng_state
from .config import TrainConfig
from .data import EpochBatchSampler, Position, TrainImages, files_digest, make_loader, reraise_worker_error
from .monitor import CsvLog, TensorBoard, append_jsonl, plot_losses, save_sample_grid, write_json
from .step import Refiner, StepResult, default_refiner, extract_features, train_step

#: ``eval_fn(head, n_iter) -> {"metric": value}``: periodic evaluation hook (head in eval mode).
EvalFn = Callable[[FoundHead, int], "dict[str, float]"]
HEAD_NAME = "head.pt"


@dataclass
class TrainResult:
    """What a training run ended with: the head, its files, iterations done, whether interrupted, the last loss."""

    head: FoundHead
    out_dir: Path
    iterations_done: int  # iterations trained so far (the next iteration index)
    interrupted: bool
    head_path: Path | None  # final head, None when interrupted
    checkpoint_path: Path
    last_loss: float | None


def unnormalize(x: torch.Tensor) -> torch.Tensor:
    """x·std + mean per channel — the authors' ``input_nonorm`` (what their solver is given)."""
    std = torch.tensor(IMAGENET_STD, dtype=x.dtype, device=x.device)[:, None, None]
    mean = torch.tensor(IMAGENET_MEAN, dtype=x.dtype, device=x.device)[:, None, None]
    return x * std + mean


def make_optimizer(head: FoundHead, cfg: TrainConfig) -> tuple[torch.optim.AdamW, torch.optim.lr_scheduler.StepLR]:
    """AdamW(lr0) with torch defaults otherwise, and StepLR(step_lr_size, step_lr_gamma)."""
    opt = torch.optim.AdamW(head.parameters(), lr=cfg.lr0)
    return opt, torch.optim.lr_scheduler.StepLR(opt, step_size=cfg.step_lr_size, gamma=cfg.step_lr_gamma)


def seed_everything(seed: int) -> None:
    """The authors' ``set_seed``: Python, NumPy and torch global generators."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


class _StopOnSigint:
    """First Ctrl-C: finish the current iteration, checkpoint, stop. Second Ctrl-C: abort now."""

    def __init__(self) -> None:
        self.requested = False
        self._prev = None

    def request(self) -> None:
        """Ask the loop to stop after the current iteration, as a first Ctrl-C does."""
        self.requested = True

    def _handler(self, signum, frame) -> None:
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True
        tqdm.write("found train: stopping after this iteration and saving a checkpoint (Ctrl-C again to abort)")

    def __enter__(self) -> "_StopOnSigint":
        if threading.current_thread() is threading.main_thread():
            self._prev = signal.signal(signal.SIGINT, self._handler)
        return self

    def __exit__(self, *exc) -> None:
        if self._prev is not None:
            signal.signal(signal.SIGINT, self._prev)


def _clear_outputs(out: Path, keep_before: int) -> None:
    """Drop this loop's outputs from iterations ≥ ``keep_before`` (all of them for a fresh run),
    so an overwritten or resumed run does not mix in results it will produce again."""
    def stale(name: str, prefix: str, suffix: str) -> bool:
        """True for a file ``prefix<n>suffix`` whose iteration ``n`` is at or past ``keep_before``."""
        num = name[len(prefix) : -len(suffix)] if name.startswith(prefix) and name.endswith(suffix) else ""
        return num.isdigit() and int(num) >= keep_before

    for p in list(out.glob("decoder_weights_niter*.pt")) + list((out / "samples").glob("iter_*.png")):
        if stale(p.name, "decoder_weights_niter", ".pt") or stale(p.name, "iter_", ".png"):
            p.unlink()
    for name in (HEAD_NAME, "summary.json"):
        (out / name).unlink(missing_ok=True)
    evals = out / "eval.jsonl"
    if evals.is_file():
        rows = [line for line in evals.read_text(encoding="utf-8").splitlines()
                if line.strip() and json.loads(line).get("iter", 0) < keep_before]
        atomic_write_text(evals, "".join(r + "\n" for r in rows))


@dataclass
class _Run:
    """What one ``train`` call carries from setup through its iterations to the end."""

    out: Path
    cfg: TrainConfig
    device: torch.device
    precision: str
    refine: Refiner
    backbone: torch.nn.Module
    patch: int
    data_id: dict
    model_id: dict
    head: FoundHead
    optimizer: torch.optim.AdamW
    scheduler: torch.optim.lr_scheduler.StepLR
    n_iter: int  # the next iteration to train
    position: Position
    epoch_loss: tuple[float, int]  # (sum, count) of this epoch's losses, for the progress bar
    elapsed0: float  # seconds trained before this call (resume)
    sampler: EpochBatchSampler
    last_iter: int
    log: CsvLog
    tb: TensorBoard | None
    dataset: TrainImages
    t_start: float
    result_loss: float | None = None
    interrupted: bool = False

    @property
    def ckpt_path(self) -> Path:
        """Where the full training state is saved and resumed from."""
        return self.out / CHECKPOINT_NAME


def _prepare_out_dir(out: Path, cfg: TrainConfig, data_id: dict, model_id: dict, resume: bool | str | Path,
                     overwrite: bool) -> TrainState | None:
    """Load and check the state to resume (or refuse to overwrite a run), then clear the outputs it will redo."""
    ckpt_path = out / CHECKPOINT_NAME
    state: TrainState | None = None
    if resume:
        src = ckpt_path if resume is True or resume == "auto" else Path(resume)
        state = load_state(src)
        check_compatible(state, cfg, data_id, model_id, src)
    elif ckpt_path.exists() and not overwrite:
        raise FoundError(f"{out} already holds a training run ({CHECKPOINT_NAME}); pass --resume to continue it or --overwrite to start again")
    out.mkdir(parents=True, exist_ok=True)
    (out / "samples").mkdir(exist_ok=True)
    _clear_outputs(out, keep_before=state.next_iter if state is not None else 0)
    return state


def _build_model(backbone: torch.nn.Module, cfg: TrainConfig, device: torch.device, state: TrainState | None
                 ) -> tuple[torch.nn.Module, FoundHead, torch.optim.AdamW, torch.optim.lr_scheduler.StepLR]:
    """Head, optimiser and schedule seeded as the authors', then restored (RNGs too) when resuming."""
    seed_everything(cfg.seed)
    head = FoundHead(int(backbone.embed_dim))
    backbone = backbone.to(device).eval().requires_grad_(False)
    head = head.to(device).train()
    optimizer, scheduler = make_optimizer(head, cfg)
    if state is not None:
        head.load_state(state.head)
        head.to(device)
        optimizer.load_state_dict(state.optimizer)
        scheduler.load_state_dict(state.scheduler)
        if state.rng is not None:
            set_rng_state(state.rng)
    return backbone, head, optimizer, scheduler


def _plan_iterations(n_files: int, cfg: TrainConfig, position: Position) -> tuple[EpochBatchSampler, int]:
    """The batch sampler from ``position`` and the last iteration, saying so when nb_epochs ends before max_iter."""
    sampler = EpochBatchSampler(n_files, cfg.batch_size, cfg.seed, cfg.nb_epochs, cfg.drop_last, start=position)
    total_batches = cfg.nb_epochs * sampler.batches_per_epoch
    last_iter = min(cfg.max_iter, total_batches - 1)
    if last_iter < cfg.max_iter:
        tqdm.write(
            f"found train: {n_files} images make {sampler.batches_per_epoch} batch(es) per epoch, so nb_epochs="
            f"{cfg.nb_epochs} allows {total_batches} iterations, not {cfg.max_iter + 1}: training stops at iteration "
            f"{last_iter} (the authors' loop does the same; raise nb_epochs with --set nb_epochs=N)"
        )
    return sampler, last_iter


def _setup(backbone: torch.nn.Module, files: Sequence[Path], cfg: TrainConfig, out: Path,
           device: str | torch.device | None, precision: str | None, resume: bool | str | Path, overwrite: bool,
           refine: Refiner | None, tensorboard: bool, run_info: dict | None) -> _Run:
    """Start or resume a run: device and precision, model and RNG state, config.json, sampler and logs."""
    device = as_device(device)  # CUDA, then MPS, then CPU
    precision = training_precision(precision, device)
    refine = refine or default_refiner()
    data_id = {"n": len(files), "digest": files_digest(files)}
    patch = int(backbone.patch_size)
    model_id = {"embed_dim": int(backbone.embed_dim), "patch_size": patch}
    state = _prepare_out_dir(out, cfg, data_id, model_id, resume, overwrite)
    backbone, head, optimizer, scheduler = _build_model(backbone, cfg, device, state)
    n_iter, position, epoch_loss, elapsed0 = 0, Position(), (0.0, 0), 0.0
    if state is not None:
        n_iter, position, epoch_loss, elapsed0 = state.next_iter, state.position, state.epoch_loss, state.elapsed_s

    info = {"config": cfg.to_dict(), "device": str(device), "precision": precision, "images": data_id,
            "backbone": model_id, **(run_info or {})}
    write_json(out / "config.json", info)
    sampler, last_iter = _plan_iterations(len(files), cfg, position)
    log = CsvLog(out / "log.csv", resume_from=n_iter)
    tb = TensorBoard(out / "tensorboard") if tensorboard else None
    dataset = TrainImages(files, cfg)
    return _Run(out=out, cfg=cfg, device=device, precision=precision, refine=refine, backbone=backbone, patch=patch,
                data_id=data_id, model_id=model_id, head=head, optimizer=optimizer, scheduler=scheduler, n_iter=n_iter,
                position=position, epoch_loss=epoch_loss, elapsed0=elapsed0, sampler=sampler, last_iter=last_iter,
                log=log, tb=tb, dataset=dataset, t_start=time.perf_counter())


def _snapshot(run: _Run) -> None:
    """Save the full training state (checkpoint.pt) at the run's current iteration and position."""
    save_state(run.ckpt_path, TrainState(
        next_iter=run.n_iter, position=run.position, head=run.head.state_for_saving(),
        optimizer=run.optimizer.state_dict(), scheduler=run.scheduler.state_dict(), config=run.cfg.to_dict(),
        data=run.data_id, model=run.model_id, epoch_loss=run.epoch_loss, rng=rng_state(),
        elapsed_s=run.elapsed0 + time.perf_counter() - run.t_start))


def _step(run: _Run, batch, t0: float, bar: tqdm) -> StepResult:
    """Train on one batch, then log it: a log.csv row, TensorBoard scalars and the progress bar."""
    device, n_iter = run.device, run.n_iter
    u8 = batch.images.to(device, non_blocking=True)
    x = normalize(u8.float().div_(255))
    feats = extract_features(run.backbone, x, run.precision)
    res = train_step(run.head, run.optimizer, feats, unnormalize(x), n_iter, run.cfg, run.scheduler, run.refine,
                     patch=run.patch)
    run.result_loss = res.loss
    run.epoch_loss = (run.epoch_loss[0] + res.loss, run.epoch_loss[1] + 1)
    acc_c = res.coarse_refined_accepted if res.coarse_refined_accepted is not None else torch.full((1,), torch.nan)
    acc_p, acc_c, fg = torch.stack([res.pred_refined_accepted.float().mean(), acc_c.float().mean().to(device),
                                    res.pred_binary.float().mean()]).tolist()  # one host sync
    run.log.write(dict(
        iter=n_iter, epoch=batch.position.epoch, batch=batch.position.batch, lr=res.lr, loss=res.loss,
        loss_refined_pred=res.loss_refined_pred, loss_coarse=res.loss_coarse, loss_self=res.loss_self,
        accepted_pred=acc_p, accepted_coarse=acc_c, fg_fraction=fg, step_s=time.perf_counter() - t0,
    ))
    if run.tb is not None:
        run.tb.log_step(n_iter, res)
    bar.set_description(f"iter {n_iter} | loss {run.epoch_loss[0] / run.epoch_loss[1]:.3f}", refresh=False)
    bar.set_postfix(loss=f"{res.loss:.4f}", lr=f"{res.lr:.4g}", refresh=False)
    bar.update(1)
    return res


def _periodic_outputs(run: _Run, batch, res: StepResult, eval_fn: EvalFn | None) -> None:
    """The every-n-iterations outputs: head snapshots, sample grids and the evaluation hook."""
    cfg, head, n_iter, out, tb = run.cfg, run.head, run.n_iter, run.out, run.tb
    if cfg.save_model_freq and n_iter % cfg.save_model_freq == 0 and n_iter > 0:
        save_head(head, out / f"decoder_weights_niter{n_iter}.pt")
    if cfg.visualize_every and n_iter % cfg.visualize_every == 0:
        grid_path = out / "samples" / f"iter_{n_iter:05d}.png"
        save_sample_grid(batch.images, [res.pred_binary, res.pseudo_label], grid_path)
        if tb is not None:
            tb.log_image("training/samples", grid_path, n_iter)
    if eval_fn is not None and cfg.eval_every and n_iter % cfg.eval_every == 0 and n_iter > 0:
        head.eval()
        metrics = eval_fn(head, n_iter)
        head.train()
        append_jsonl(out / "eval.jsonl", {"iter": n_iter, **metrics})
        if tb is not None:
            tb.log_eval(n_iter, metrics)
        tqdm.write(f"iter {n_iter}: " + ", ".join(f"{k} {v:.4f}" if isinstance(v, float) else f"{k} {v}" for k, v in metrics.items()))


def _advance(run: _Run, batch, stop: _StopOnSigint) -> bool:
    """Move past the trained batch and checkpoint when due (last iteration, Ctrl-C, checkpoint_every);
    True when the loop ends here."""
    cfg = run.cfg
    run.position = run.sampler.advance(batch.position)
    if run.position.epoch != batch.position.epoch:
        run.epoch_loss = (0.0, 0)  # the progress bar shows the epoch's running mean, as the authors'
    done = run.n_iter >= run.last_iter
    run.n_iter += 1
    if done or stop.requested or (cfg.checkpoint_every and run.n_iter % cfg.checkpoint_every == 0):
        _snapshot(run)
        if cfg.checkpoint_every and run.n_iter % cfg.checkpoint_every == 0:
            plot_losses(run.log.rows, run.out / "loss.png")
    if done:
        return True
    if stop.requested:
        run.interrupted = True
        return True
    return False


def _iterate(run: _Run, bar: tqdm, stop: _StopOnSigint, eval_fn: EvalFn | None,
             on_step: Callable[[StepResult, _StopOnSigint], None] | None) -> None:
    """Train iterations ``run.n_iter … run.last_iter`` (fewer when the data or a Ctrl-C ends it first)."""
    if run.n_iter > run.last_iter:
        return
    loader = make_loader(run.dataset, run.sampler, run.cfg.num_workers, run.device.type == "cuda")
    it = iter(loader)
    while True:
        t0 = time.perf_counter()
        try:
            batch = next(it)
        except StopIteration:
            break
        except Exception as e:  # noqa: BLE001 - worker errors arrive re-wrapped
            reraise_worker_error(e)
        res = _step(run, batch, t0, bar)
        _periodic_outputs(run, batch, res, eval_fn)
        if on_step is not None:
            on_step(res, stop)
        if _advance(run, batch, stop):
            break
    del it, loader


def _finish(run: _Run) -> TrainResult:
    """Plot the losses and, unless interrupted, save the last snapshot, head.pt and summary.json."""
    plot_losses(run.log.rows, run.out / "loss.png")
    head, out, n_iter = run.head, run.out, run.n_iter
    head_path: Path | None = None
    if not run.interrupted:
        save_head(head, out / f"decoder_weights_niter{n_iter - 1}.pt")
        head_path = out / HEAD_NAME
        save_head(head, head_path)
        write_json(out / "summary.json", {
            "iterations": n_iter, "last_loss": run.result_loss, "head": str(head_path), "checkpoint": str(run.ckpt_path),
            "elapsed_s": run.elapsed0 + time.perf_counter() - run.t_start, "device": str(run.device),
            "precision": run.precision,
        })
    return TrainResult(head=head.eval(), out_dir=out, iterations_done=n_iter, interrupted=run.interrupted,
                       head_path=head_path, checkpoint_path=run.ckpt_path, last_loss=run.result_loss)


def train(
    backbone: torch.nn.Module,
    files: Sequence[Path],
    cfg: TrainConfig,
    out_dir: str | Path,
    *,
    device: str | torch.device | None = None,
    precision: str | None = None,
    resume: bool | str | Path = False,
    overwrite: bool = False,
    eval_fn: EvalFn | None = None,
    refine: Refiner | None = None,
    tensorboard: bool = False,
    progress: bool = True,
    on_step: Callable[[StepResult, "_StopOnSigint"], None] | None = None,
    run_info: dict | None = None,
) -> TrainResult:
    """Train a FOUND head on ``files`` with the frozen ``backbone``; see the module docstring."""
    run = _setup(backbone, files, cfg, Path(out_dir), device, precision, resume, overwrite, refine, tensorboard, run_info)
    bar = tqdm(total=run.last_iter + 1, initial=min(run.n_iter, run.last_iter + 1), disable=not progress, unit="it",
               dynamic_ncols=True)
    stop = _StopOnSigint()
    try:
        with stop:
            _iterate(run, bar, stop, eval_fn, on_step)
    finally:
        bar.close()
        run.log.close()
        if run.tb is not None:
            run.tb.close()
    return _finish(run)
