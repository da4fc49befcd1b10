"""What a run writes: the final checkpoint folder, and the resumable step checkpoints a killed run continues from.

Checkpoint layout (``out_dir``)
-------------------------------
``finetune: lora``: ``adapter/`` (peft, safetensors: LoRA weights and the added tokens' rows), ``base/``
(config-built backbone, safetensors) or ``base.json`` (``{"path", "vocab_size", "architecture", "base_rows"}`` for
a local-folder backbone), ``ema_adapter.safetensors`` (JEPA; the keys of ``adapter/adapter_model.safetensors``).
``finetune: full``: ``model/`` (the whole trained model, safetensors) and ``ema_model.safetensors`` (JEPA; the
model's parameter names). Both: ``predictor.safetensors`` (JEPA), ``tokenizer/``, ``recipe.json``,
``train_log.json`` (the run's :class:`~ehr_assets.train.loop.TrainResult`: loss curve, tokens seen per loss, where
it left the data streams); ``checkpoints/step_NNNNNN/`` when ``training.checkpoint_every`` > 0. The LoRA base is
written by :func:`ehr_assets.model.backbone.build_model` before LoRA wraps it; the rest by :func:`save_final`.

Step checkpoints (``<resume_dir>/step_NNNNNN/``) hold everything a resumed run needs to end with the same bits as an
uninterrupted one (safetensors + JSON, no pickle), tagged with :func:`run_fingerprint` so that a checkpoint of another
recipe, data or parent checkpoint is never resumed.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from collections.abc import Callable
from pathlib import Path

import torch

from ..model.backbone import is_peft, trainable_parameters
from ..model.base import quiet
from ..specs import RecipeSpec
from .data import TrainData, data_fingerprint


def save_state(model, predictor, momentum, info: dict, dest: Path) -> None:
    """The trained weights into ``dest``: ``adapter/`` (LoRA, plus the whole embedding layers when a local backbone
    was resized and its new rows are not all trained token rows) or ``model/`` (full fine-tuning), and
    ``predictor.safetensors`` and the EMA weights (JEPA)."""
    from safetensors.torch import save_file

    with quiet():
        if is_peft(model):
            model.save_pretrained(
                str(dest / "adapter"), safe_serialization=True, save_embedding_layers=_save_embeddings(model, info)
            )
        else:
            model.save_pretrained(str(dest / "model"), safe_serialization=True)
    if predictor is not None:
        sd = {k: v.detach().to("cpu", torch.float32).contiguous() for k, v in predictor.state_dict().items()}
        meta = {"hidden": str(predictor.hidden), "depth": str(predictor.depth), "width": str(predictor.width)}
        save_file(sd, str(dest / "predictor.safetensors"), metadata=meta)
    if momentum is not None:
        name = "ema_adapter.safetensors" if is_peft(model) else "ema_model.safetensors"
        save_file(momentum.state_dict_to_save(), str(dest / name))


def _save_embeddings(model, info: dict) -> bool:
    """Whether the adapter must carry whole embedding layers: a resized local backbone's new rows are random when the
    base is read back, so they must be saved, unless both the input and the output rows are trained token rows
    (the adapter holds them)."""
    if not info.get("resized", False):
        return False
    cfg = model.peft_config[model.active_adapter]
    rows = getattr(cfg, "trainable_token_indices", None) or {}
    return not (isinstance(rows, dict) and {"embed_tokens", "lm_head"} <= set(rows))


def save_final(
    out_dir: Path,
    model,
    predictor,
    momentum,
    info: dict,
    recipe: RecipeSpec,
    train_log: dict,
    tokenizer_dir: Path | None,
) -> None:
    """The finished checkpoint: :func:`save_state`, a copy of the tokenizer folder, ``recipe.json`` and
    ``train_log.json`` (``train_log``: the run's result as a dict)."""
    save_state(model, predictor, momentum, info, out_dir)
    if tokenizer_dir is not None:
        shutil.copytree(Path(tokenizer_dir), out_dir / "tokenizer")
    (out_dir / "recipe.json").write_text(json.dumps(recipe.model_dump(mode="json"), indent=2))
    (out_dir / "train_log.json").write_text(json.dumps(train_log, indent=2, allow_nan=True))


# ------------------------------------------------------------------------------------------- step checkpoints
def run_fingerprint(recipe: RecipeSpec, data: TrainData, init_dir: Path | None) -> str:
    """sha256 of the recipe, the data (:func:`data_fingerprint`) and the parent checkpoint's adapter files: a step
    checkpoint is resumed only by a run with the same three."""
    h = hashlib.sha256(json.dumps(recipe.model_dump(mode="json"), sort_keys=True).encode())
    h.update(data_fingerprint(data).encode())
    if init_dir is not None:
        for sub in ("adapter", "model"):
            for f in sorted((Path(init_dir) / sub).glob("*.safetensors")):
                h.update(hashlib.sha256(f.read_bytes()).digest())
    return h.hexdigest()


def parent_log(init_dir: Path | None) -> dict:
    """The ``init_from`` checkpoint's ``train_log.json`` ({} without a parent or a log)."""
    if init_dir is None or not (Path(init_dir) / "train_log.json").is_file():
        return {}
    return json.loads((Path(init_dir) / "train_log.json").read_text())


def stream_starts(init_dir: Path | None, log: Callable[[str], None]) -> dict[str, int]:
    """Where this run starts each data stream (``sft``, ``jepa``): where its ``init_from`` run left them, so a
    curriculum reads the data as one run of both phases would; 0 without a parent (or one whose log predates the
    streams, said in the log)."""
    if init_dir is None:
        return {}
    ends = parent_log(init_dir).get("stream_ends")
    if ends is None:
        log(f"note: {init_dir} does not say where it left the data streams; this run starts them at 0")
        return {}
    return {k: int(v) for k, v in ends.items()}


def _trainer_tensors(model, predictor, momentum, optim_state: dict, device: torch.device) -> dict[str, torch.Tensor]:
    """Every tensor a resumed run restores: trainable parameters, EMA, predictor, AdamW moments, RNG states."""
    t: dict[str, torch.Tensor] = {}
    for n, p in trainable_parameters(model):
        t[f"param/{n}"] = p.detach().cpu().contiguous()
    if momentum is not None:
        for n, e in momentum.ema.items():
            t[f"ema/{n}"] = e.detach().cpu().contiguous()
    if predictor is not None:
        for n, v in predictor.state_dict().items():
            t[f"predictor/{n}"] = v.detach().cpu().contiguous()
    for i, st in optim_state["state"].items():
        for k, v in st.items():
            t[f"optim/{i}/{k}"] = (v if torch.is_tensor(v) else torch.tensor(v)).detach().cpu().contiguous()
    t["rng/torch"] = torch.get_rng_state()
    if device.type == "cuda":
        t["rng/cuda"] = torch.cuda.get_rng_state(device)
    return t


def save_step(
    dest: Path,
    step: int,
    fingerprint: str,
    model,
    predictor,
    momentum,
    optim,
    sched,
    info: dict,
    curve: list[dict],
    tokens: dict[str, int],
    device: torch.device,
) -> None:
    """A resumable step checkpoint (all safetensors + JSON, no pickle): ``adapter/`` and friends as in the final
    checkpoint, plus ``trainer_state.safetensors`` (trainable tensors, EMA, predictor, AdamW moments, RNG states)
    and ``trainer_state.json`` (step, fingerprint, optimizer hyper-parameters, scheduler, loss curve so far)."""
    from safetensors.torch import save_file

    tmp = dest.parent / f".{dest.name}.tmp"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    save_state(model, predictor, momentum, info, tmp)
    osd = optim.state_dict()
    save_file(_trainer_tensors(model, predictor, momentum, osd, device), str(tmp / "trainer_state.safetensors"))
    sched_state = {k: v for k, v in sched.state_dict().items() if k != "lr_lambdas"}
    meta = {
        "step": step,
        "fingerprint": fingerprint,
        "param_groups": osd["param_groups"],
        "scheduler": sched_state,
        "curve": curve,
        "tokens": tokens,
    }
    (tmp / "trainer_state.json").write_text(json.dumps(meta, allow_nan=True))
    if dest.exists():
        shutil.rmtree(dest)
    tmp.rename(dest)


def latest_step(folder: Path, fingerprint: str, log: Callable[[str], None]) -> Path | None:
    """The newest complete step checkpoint in ``folder`` made by the same recipe, data and parent, or None."""
    if not folder.is_dir():
        return None
    for d in sorted(folder.glob("step_*"), reverse=True):
        meta = d / "trainer_state.json"
        if not meta.is_file() or not (d / "trainer_state.safetensors").is_file():
            continue
        try:
            fp = json.loads(meta.read_text()).get("fingerprint")
        except json.JSONDecodeError:
            continue
        if fp == fingerprint:
            return d
        log(f"ignoring step checkpoint {d}: it was made by another recipe, data or parent checkpoint")
    return None


def load_step(
    src: Path, model, predictor, momentum, optim, sched, device: torch.device
) -> tuple[int, list, dict[str, int]]:
    """Restore a step checkpoint into the run's model, EMA, predictor, optimizer, scheduler and RNG; returns
    (step, loss curve so far, tokens read so far per stream)."""
    from safetensors.torch import load_file

    t = load_file(str(src / "trainer_state.safetensors"))
    meta = json.loads((src / "trainer_state.json").read_text())
    with torch.no_grad():
        for n, p in trainable_parameters(model):
            p.copy_(t[f"param/{n}"].to(p.device, p.dtype))
        if momentum is not None:
            for n, e in momentum.ema.items():
                e.copy_(t[f"ema/{n}"].to(e.device, e.dtype))
    if predictor is not None:
        predictor.load_state_dict({n: t[f"predictor/{n}"] for n in predictor.state_dict()})
    state: dict[int, dict] = {}
    for k, v in t.items():
        if k.startswith("optim/"):
            _, i, name = k.split("/", 2)
            state.setdefault(int(i), {})[name] = v.to(device) if name != "step" else v
    optim.load_state_dict({"state": state, "param_groups": meta["param_groups"]})
    sched.load_state_dict({**sched.state_dict(), **meta["scheduler"]})
    torch.set_rng_state(t["rng/torch"])
    if device.type == "cuda" and "rng/cuda" in t:
        torch.cuda.set_rng_state(t["rng/cuda"], device)
    return int(meta["step"]), list(meta["curve"]), {k: int(v) for k, v in meta["tokens"].items()}


def prune_steps(folder: Path, keep: int) -> None:
    """Remove all but the newest ``keep`` step checkpoints in ``folder``."""
    steps = sorted(folder.glob("step_*"))
    for d in steps[: max(0, len(steps) - keep)]:
        shutil.rmtree(d, ignore_errors=True)
