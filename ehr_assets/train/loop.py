"""The training loop: :func:`train` reads top to bottom as setup, resume, one optimizer step at a time with its log
line and step checkpoint, and the final save.

Objectives: ``sft`` -> SFT on random windows of whole timelines; ``jepa`` / ``hybrid`` ->
``loss_weights.sft * SFT(windows of whole timelines, the same stream ``sft`` reads) + loss_weights.jepa *
JEPA(decision-node examples)`` (the losses are :mod:`ehr_assets.model.losses`; the batches
:mod:`ehr_assets.model.batches` and :class:`~ehr_assets.train.setup.Batches`). Every logged step records the losses,
the normalized JEPA loss (JEPA loss / the targets' variance at the masked positions: 1 = the predictor only learned
their mean), lr and tau; the result records the tokens each loss read (:mod:`ehr_assets.compute`). Determinism: the
backbone is seeded with ``training.seed``, the predictor with ``seed + 1``, and every micro-batch is a pure function
of (seed, step) (:class:`~ehr_assets.train.data.Sampler`), so a resumed run ends with the same bits as an
uninterrupted one on CPU.
"""

from __future__ import annotations

import dataclasses
import resource
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ..compute import add_tokens
from ..model.losses import step_losses
from ..model.precision import autocast, bf16_for
from ..model.schedules import tau_at
from ..progress import Progress
from ..specs import RecipeSpec
from .checkpoint import (
    latest_step,
    load_step,
    parent_log,
    prune_steps,
    run_fingerprint,
    save_final,
    save_step,
    stream_starts,
)
from .data import TrainData
from .distributed import all_reduce_grads, init_distributed, mean_over_processes
from .monitor import collapse_stats, monitor_contexts
from .setup import Batches, Objective, Parts, build_parts, validate

NAN = float("nan")


@dataclass
class TrainResult:
    steps: int
    wall_s: float  # the whole call: model build, training loop, saving
    tokens_per_s: float  # non-pad input tokens of the training examples per second of the training loop
    peak_mem_mb: float  # peak RSS on CPU, torch.cuda.max_memory_allocated on GPU
    # step, loss, sft_loss, jepa_loss, jepa_loss_norm, lr, tau (NaN if unused), collapse monitor
    loss_curve: list[dict] = field(default_factory=list)
    trainable_params: int = 0
    total_params: int = 0
    finetune: str = "lora"
    init_from: str | None = None
    tokens_seen: dict = field(default_factory=dict)  # real tokens each loss read in this run: {"sft": n, "jepa": m}
    tokens_seen_total: dict = field(default_factory=dict)  # the same with the init_from chain's runs
    stream_ends: dict = field(default_factory=dict)  # where the run left each data stream (a continuing run's start)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def _peak_mem_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux: KiB


def _prepare_out_dir(out_dir: Path) -> None:
    if out_dir.exists() and any(out_dir.iterdir()):
        raise ValueError(f"{out_dir}: output folder is not empty")
    out_dir.mkdir(parents=True, exist_ok=True)


def _start_line(recipe: RecipeSpec, parts: Parts, device: torch.device, world: int, init_dir: Path | None) -> str:
    tr, threads = recipe.training, torch.get_num_threads()
    return (
        f"{recipe.name}: {recipe.objective} on {device.type}"
        + (f" ({threads} thread{'s' if threads != 1 else ''})" if device.type == "cpu" else "")
        + (f" x {world} processes" if world > 1 else "")
        + (f" from {init_dir}" if init_dir is not None else "")
        + f", finetune {recipe.finetune}: {parts.n_trainable:,} trainable / {parts.n_total:,} params, "
        + f"{tr.steps} steps x {tr.batch_size}"
        + (f" x {tr.grad_accum}" if tr.grad_accum > 1 else "")
        + f" x <= {tr.seq_len} tokens"
        + (" (SFT windows + decision-node examples)" if recipe.objective != "sft" and parts.momentum else "")
    )


# ============================================================================================ step checkpoints
def resume_state(
    recipe: RecipeSpec,
    parts: Parts,
    resume_dir: Path,
    fingerprint: str,
    device: torch.device,
    log: Callable[[str], None],
) -> tuple[int, list[dict], dict[str, int]]:
    """(first step, loss curve so far, tokens read so far per stream): restored from the newest step checkpoint of
    this run's fingerprint in ``resume_dir`` when resuming is on, else a fresh start."""
    tr = recipe.training
    if not (tr.resume and tr.checkpoint_every):
        return 0, [], add_tokens(None, None)
    found = latest_step(resume_dir, fingerprint, log)
    if found is None:
        return 0, [], add_tokens(None, None)
    start, curve, tokens = load_step(
        found, parts.model, parts.predictor, parts.momentum, parts.optim, parts.sched, device
    )
    log(f"{recipe.name}: resuming from {found} (step {start}/{tr.steps})")
    return start, curve, tokens


def step_checkpoint(
    recipe: RecipeSpec,
    parts: Parts,
    resume_dir: Path,
    n: int,
    fingerprint: str,
    curve: list[dict],
    tokens: dict[str, int],
    device: torch.device,
    log: Callable[[str], None],
) -> None:
    """Write the step checkpoint after step ``n`` and keep only the newest ``training.keep_checkpoints``."""
    dest = resume_dir / f"step_{n:06d}"
    save_step(
        dest,
        n,
        fingerprint,
        parts.model,
        parts.predictor,
        parts.momentum,
        parts.optim,
        parts.sched,
        parts.info,
        curve,
        tokens,
        device,
    )
    prune_steps(resume_dir, recipe.training.keep_checkpoints)
    log(f"{recipe.name}: step checkpoint {dest}")


# ====================================================================================================== steps
def optimizer_step(
    recipe: RecipeSpec,
    parts: Parts,
    batches: Batches,
    objective: Objective,
    step: int,
    device: torch.device,
    world: int,
    autocast,
) -> tuple[list[float], dict[str, int], float]:
    """One optimizer step: ``grad_accum`` micro-batches (losses, backward), gradients averaged over processes and
    clipped, AdamW and the lr schedule, then the EMA update. Returns the (loss, sft, jepa, normalized jepa) sums over
    the micro-batches, the real tokens each loss read over all processes, and the step's tau (NaN without a momentum
    encoder)."""
    tr, lw, o = recipe.training, recipe.loss_weights, recipe.optimizer
    sums = [0.0, 0.0, 0.0, 0.0]
    tokens = {"sft": 0, "jepa": 0}
    for micro in range(tr.grad_accum):
        b = batches.get(step, micro, device)
        tokens["sft"] += b.sft_tokens * world
        tokens["jepa"] += b.jepa_tokens * world
        stats: dict[str, float] = {}
        with autocast():
            ls, lj = step_losses(
                parts.model,
                parts.predictor,
                parts.momentum,
                b.jepa if b.jepa is not None else b.sft,
                sft=objective.sft,
                jepa=objective.jepa,
                sft_batch=b.sft,
                stats=stats,
            )
        loss = torch.zeros((), device=device)
        if ls is not None:
            loss = loss + lw.sft * ls
            sums[1] += float(ls.detach())
        if lj is not None:
            loss = loss + lw.jepa * lj
            sums[2] += float(lj.detach())
            var = stats["jepa_target_var"]
            sums[3] += float(lj.detach()) / var if var > 0 else NAN
        (loss / tr.grad_accum).backward()
        sums[0] += float(loss.detach())
    if world > 1:
        all_reduce_grads(parts.params, world)
    if o.grad_clip is not None:
        torch.nn.utils.clip_grad_norm_(parts.params, o.grad_clip)
    parts.optim.step()
    parts.sched.step()
    parts.optim.zero_grad(set_to_none=True)
    tau = NAN
    if parts.momentum is not None:
        tau = tau_at(step, tr.steps, recipe.jepa)
        parts.momentum.update(tau)
    return sums, tokens, tau


def step_record(
    n: int,
    sums: list[float],
    lr: float,
    tau: float,
    objective: Objective,
    grad_accum: int,
    device: torch.device,
    world: int,
) -> dict:
    """The loss-curve entry of step ``n``: the mean losses over micro-batches and processes (the normalized JEPA
    loss: JEPA loss / the targets' variance at the masked positions), lr and tau."""
    tot, s_tot, j_tot, n_tot = mean_over_processes(sums, device, world)
    return {
        "step": n,
        "loss": tot / grad_accum,
        "sft_loss": s_tot / grad_accum if objective.sft else NAN,
        "jepa_loss": j_tot / grad_accum if objective.jepa else NAN,
        "jepa_loss_norm": n_tot / grad_accum if objective.jepa else NAN,
        "lr": lr,
        "tau": tau,
    }


def progress_line(recipe: RecipeSpec, rec: dict, objective: Objective, has_momentum: bool, tok_per_s: float) -> str:
    """The log line of a step record (losses, lr, tau, throughput, and the collapse monitor when it ran)."""
    mon = f" | emb std {rec['emb_mean_std']:.3g} eff.rank {rec['emb_eff_rank']:.1f}" if "emb_eff_rank" in rec else ""
    return (
        f"{recipe.name} step {rec['step']}/{recipe.training.steps} loss {rec['loss']:.4f}"
        + (
            f" (sft {rec['sft_loss']:.4f}, jepa {rec['jepa_loss']:.4f}, normalized {rec['jepa_loss_norm']:.3f})"
            if objective.jepa_mode
            else ""
        )
        + f" lr {rec['lr']:.2e}"
        + (f" tau {rec['tau']:.4f}" if has_momentum else "")
        + f" | {tok_per_s:,.0f} tok/s"
        + mon
    )


# ====================================================================================================== train
def _precision(recipe: RecipeSpec, device: torch.device, log: Callable[[str], None]):
    """(use_bf16, autocast context factory) under the device policy of :func:`ehr_assets.model.precision.bf16_for`
    (a CPU runs a bf16 recipe in fp32 and says so). Resets CUDA's peak-memory counter for the run's figure."""
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    precision = recipe.training.precision
    use_bf16 = bf16_for(precision, device)
    if precision == "bf16" and not use_bf16:
        log("note: precision bf16 requested but no CUDA device; training in fp32 on CPU")
    return use_bf16, lambda: autocast(device, use_bf16)


def train(
    recipe: RecipeSpec,
    data: TrainData,
    out_dir: Path,
    *,
    init_dir: Path | None = None,
    tokenizer_dir: Path | None = None,
    resume_dir: Path | None = None,
    log: Callable[[str], None] = print,
) -> TrainResult:
    """Train ``recipe`` on ``data`` and write the checkpoint into ``out_dir`` (missing or empty).

    Step checkpoints (every ``training.checkpoint_every`` steps) go to ``resume_dir`` (default
    ``out_dir/checkpoints``); when ``training.resume`` is on and ``resume_dir`` holds a step checkpoint of the same
    recipe, data and parent checkpoint (a killed run), training continues from it and ends with the same weights as
    an uninterrupted run (CPU, same seeds: bit for bit; the sampler is a pure function of seed and step).
    Under ``accelerate launch`` / torchrun each process trains on its own share of every global batch
    (``batch_size`` per process) and gradients are averaged; only process 0 writes.
    """
    t_start = time.perf_counter()
    validate(recipe, data)
    if recipe.init_from is not None and init_dir is None:
        raise ValueError(f"recipe {recipe.name!r} has init_from {recipe.init_from!r}: pass init_dir (its checkpoint)")
    out_dir = Path(out_dir)
    device, rank, world = init_distributed()
    main = rank == 0
    if main:
        _prepare_out_dir(out_dir)
    else:
        log = lambda _m: None  # noqa: E731
    resume_dir = Path(resume_dir) if resume_dir is not None else out_dir / "checkpoints"

    tr = recipe.training
    use_bf16, autocast = _precision(recipe, device, log)
    objective = Objective.of(recipe)
    save_base_to = out_dir if main else None
    parts = build_parts(
        recipe, data, device, objective, init_dir=init_dir, save_base_to=save_base_to, use_bf16=use_bf16, log=log
    )
    batches = Batches(recipe, data, objective, world, rank, stream_starts(init_dir, log))
    mon_ctx = monitor_contexts(data, tr.seq_len, tr.monitor_nodes) if main else []

    fingerprint = run_fingerprint(recipe, data, init_dir)
    start, curve, tokens = resume_state(recipe, parts, resume_dir, fingerprint, device, log)
    log(_start_line(recipe, parts, device, world, init_dir))

    t_loop = time.perf_counter()
    tokens0 = sum(tokens.values())
    beat = Progress(recipe.name, tr.steps, log, unit="steps", start=start)  # a line at least every 15 s
    for step in range(start, tr.steps):
        lr_now = parts.optim.param_groups[0]["lr"]
        sums, n_tokens, tau = optimizer_step(recipe, parts, batches, objective, step, device, world, autocast)
        tokens = add_tokens(tokens, n_tokens)
        n = step + 1
        tok_s = (sum(tokens.values()) - tokens0) / max(time.perf_counter() - t_loop, 1e-9)
        if n == 1 or n % tr.log_every == 0 or n == tr.steps:
            rec = step_record(n, sums, lr_now, tau, objective, tr.grad_accum, device, world)
            if main and (n == 1 or n % (tr.monitor_every or tr.log_every) == 0 or n == tr.steps):
                rec.update(collapse_stats(parts.model, mon_ctx, data.pad_id, device, autocast))
            curve.append(rec)
            log(progress_line(recipe, rec, objective, parts.momentum is not None, tok_s))
            beat.mark(n)
        beat.at(n, note=f"{tok_s:,.0f} tok/s")  # between the log steps, when a line is due
        if main and tr.checkpoint_every and n % tr.checkpoint_every == 0 and n < tr.steps:
            step_checkpoint(recipe, parts, resume_dir, n, fingerprint, curve, tokens, device, log)
    loop_s = time.perf_counter() - t_loop

    res = TrainResult(
        steps=tr.steps,
        wall_s=time.perf_counter() - t_start,
        tokens_per_s=(sum(tokens.values()) - tokens0) / max(loop_s, 1e-9),
        peak_mem_mb=_peak_mem_mb(device),
        loss_curve=curve,
        trainable_params=int(parts.n_trainable),
        total_params=int(parts.n_total),
        **_accounting(recipe, init_dir, tokens, batches),
    )
    if main:
        _publish(out_dir, recipe, parts, res, tokenizer_dir, start, log)
    return res


def _accounting(recipe: RecipeSpec, init_dir: Path | None, tokens: dict[str, int], batches: Batches) -> dict:
    """The run's compute fields of :class:`TrainResult`: finetune, parent, tokens seen (this run and with the
    ``init_from`` chain) and where the data streams were left."""
    parent = parent_log(init_dir)
    return {
        "finetune": recipe.finetune,
        "init_from": recipe.init_from,
        "tokens_seen": dict(tokens),
        "tokens_seen_total": add_tokens(parent.get("tokens_seen_total"), tokens),
        "stream_ends": batches.ends(recipe.training.steps),
    }


def _publish(
    out_dir: Path,
    recipe: RecipeSpec,
    parts: Parts,
    res: TrainResult,
    tokenizer_dir: Path | None,
    resumed_at: int,
    log: Callable[[str], None],
) -> None:
    """Write the final checkpoint (process 0) and log the run's figures."""
    save_final(out_dir, parts.model, parts.predictor, parts.momentum, parts.info, recipe, res.to_dict(), tokenizer_dir)
    seen = res.tokens_seen
    log(
        f"{recipe.name}: done in {res.wall_s:.1f}s, {res.tokens_per_s:,.0f} tok/s, peak {res.peak_mem_mb:,.0f} MiB, "
        f"tokens seen: {seen['sft']:,} SFT + {seen['jepa']:,} JEPA"
        + (f" (resumed at step {resumed_at})" if resumed_at else "")
    )
