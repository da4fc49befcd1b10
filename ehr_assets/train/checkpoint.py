"""What a run writes: the final checkpoint folder, and the resumable step checkpoints a killed run continues from.

Checkpoint layout (``out_dir``)
-------------------------------
``adapter/`` (peft, safetensors), ``base/`` (config-built backbone, safetensors) or ``base.json`` (``{"path",
"vocab_size", "architecture"}`` for a local-folder backbone), ``predictor.safetensors`` and ``ema_adapter.safetensors``
(JEPA objectives; the EMA file has the same keys as ``adapter/adapter_model.safetensors``), ``tokenizer/``,
``recipe.json``, ``train_log.json``; ``checkpoints/step_NNNNNN/`` when ``training.checkpoint_every`` > 0. The base
is written by :func:`ehr_assets.model.backbone.build_model` before LoRA wraps it; the rest by :func:`save_final`.

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

from ..model.backbone import quiet, trainable_parameters
from ..specs import RecipeSpec
from .data import TrainData, data_fingerprint


def save_state(model, predictor, momentum, info: dict, dest: Path) -> None:
    """``adapter/`` (plus the embedding layers when the backbone was resized), ``predictor.safetensors`` and
    ``ema_adapter.safetensors`` (JEPA) into ``dest``."""
    from safetensors.torch import save_file

    with quiet():
        model.save_pretrained(
            str(dest / "adapter"), safe_serialization=True, save_embedding_layers=bool(info.get("resized", False))
        )
    if predictor is not None:
        sd = {k: v.detach().to("cpu", torch.float32).contiguous() for k, v in predictor.state_dict().items()}
        meta = {"hidden": str(predictor.hidden), "depth": str(predictor.depth), "width": str(predictor.width)}
        save_file(sd, str(dest / "predictor.safetensors"), metadata=meta)
    if momentum is not None:
        save_file(momentum.adapter_state_dict(), str(dest / "ema_adapter.safetensors"))


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
        for f in sorted((Path(init_dir) / "adapter").glob("*.safetensors")):
            h.update(hashlib.sha256(f.read_bytes()).digest())
    return h.hexdigest()


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
    tokens: int,
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


def load_step(src: Path, model, predictor, momentum, optim, sched, device: torch.device) -> tuple[int, list, int]:
    """Restore a step checkpoint into the run's model, EMA, predictor, optimizer, scheduler and RNG; returns
    (step, loss curve so far, tokens read so far)."""
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
    return int(meta["step"]), list(meta["curve"]), int(meta["tokens"])


def prune_steps(folder: Path, keep: int) -> None:
    """Remove all but the newest ``keep`` step checkpoints in ``folder``."""
    steps = sorted(folder.glob("step_*"))
    for d in steps[: max(0, len(steps) - keep)]:
        shutil.rmtree(d, ignore_errors=True)
