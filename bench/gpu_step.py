"""Throughput of the SMB training step and of embedding extraction, using the project's own training code.

    python bench/gpu_step.py                        # Llama-3.1-8B shape, LoRA r=16 on all linear layers, bf16, 4 x 2048
    python bench/gpu_step.py --shape demo           # the demo recipe (models/jepa.yaml) on the CPU
    python bench/gpu_step.py --batch 2 --no-grad-ckpt --steps 8

Random weights, random tokens (a future of 50 % of the sequence after a random boundary). Measured, after warm-up:
- ``embed``: forward of the decoder stack (no lm_head), no grad, last-token pooling;
- ``sft``: one SFT optimizer step; ``smb``: one JEPA-phase step with the SFT loss (SFT pass, online masked pass,
  momentum target pass), each with the optimized :func:`ehr_assets.model.losses.step_losses` and, for comparison, the
  plain three-pass ``sft_loss`` + ``jepa_loss``.
MFU (the convention of the measured peer baseline): forward F = 2 * matmul params * tokens + 2 * layers * seq * hidden
* tokens; a LoRA pass with grad = 2F; the SMB step = 5F; divided by the bf16 matmul peak (``--peak-tflops``, 772 on
an H100 as measured there). Prints a table and writes ``bench/results/gpu_step_<device>.json``.

Runs as plain Python on a GPU image without the orchestration stack (see :data:`NEEDED`); a missing package such as
pydantic is installed from local wheels (``--wheels``, default ``.whl/``), never downloaded there::

    python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
        --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 -d .whl \
        pydantic==2.14.4 pydantic-core==2.50.5 annotated-types==0.8.0 typing-inspection==0.4.5
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import json
import subprocess
import sys
import tempfile
import time
from contextlib import nullcontext
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

# What this script imports, as module -> distribution. A GPU image usually has torch, transformers, peft, safetensors,
# numpy and pyyaml but not pydantic (the project's declaration models): those travel as wheels (see WHEELS_HELP).
NEEDED = {
    "torch": "torch",
    "transformers": "transformers",
    "peft": "peft",
    "safetensors": "safetensors",
    "numpy": "numpy",
    "yaml": "pyyaml",
    "pydantic": "pydantic",
    "pydantic_core": "pydantic-core",
    "annotated_types": "annotated-types",
    "typing_inspection": "typing-inspection",
}
WHEELS_HELP = (
    "On a machine with pip access, download them for the GPU machine's Python (here 3.12, x86-64 Linux) into the "
    "repository's .whl/ folder and bring that folder along:\n"
    "  python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp "
    "--platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 -d .whl "
    "pydantic==2.14.4 pydantic-core==2.50.5 annotated-types==0.8.0 typing-inspection==0.4.5\n"
    "(versions: the ones the project is tested with; pydantic-core must be the one that pydantic pins). "
    "This script then installs them from --wheels (default .whl) into a temporary folder; nothing is downloaded there."
)


def importable(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):  # a broken install or an import hook that refuses the module
        return False


def missing_packages() -> list[str]:
    """Distributions of :data:`NEEDED` whose module cannot be imported here."""
    return [dist for mod, dist in NEEDED.items() if not importable(mod)]


def ensure_packages(wheels: Path) -> None:
    """Make every package of :data:`NEEDED` importable, installing missing ones from the local wheel folder
    ``wheels`` (no index, no network) into a temporary site folder; exit with what to do when that is not enough."""
    missing = missing_packages()
    if not missing:
        return
    found = sorted(Path(wheels).glob("*.whl")) if Path(wheels).is_dir() else []
    if found:
        site = Path(tempfile.gettempdir()) / "ehr_assets_bench_site"
        cmd = [sys.executable, "-m", "pip", "install", "-q", "--no-index", "--no-deps", "--no-compile",
               "--upgrade", "--target", str(site), *map(str, found)]  # fmt: skip
        subprocess.run(cmd, check=True)
        sys.path.insert(0, str(site))
        importlib.invalidate_caches()
        missing = missing_packages()
        if not missing:
            print(f"installed {len(found)} wheel(s) from {wheels} into {site}", flush=True)
            return
    raise SystemExit(
        f"bench/gpu_step.py: missing Python package(s) {missing}"
        + (f" (not among the wheels in {wheels})" if found else f" and no wheels in {wheels}")
        + ".\n"
        + WHEELS_HELP
    )


LLAMA_8B = {
    "hidden_size": 4096,
    "num_hidden_layers": 32,
    "num_attention_heads": 32,
    "num_key_value_heads": 8,
    "intermediate_size": 14336,
    "max_position_embeddings": 8192,
}
LLAMA_8B_VOCAB = 128256


def load_project_modules() -> None:
    """Import numpy, torch and the project's model code (after :func:`ensure_packages`) into this module."""
    global np, torch, build_model, decoder_of, enable_checkpointing, pick_device, make_jepa_batch
    global MomentumEncoder, Predictor, jepa_loss, sft_loss, step_losses, autocast, bf16_for
    global RecipeSpec, load_project, TrainData
    import numpy as np
    import torch

    from ehr_assets.model.backbone import build_model, decoder_of, enable_checkpointing, pick_device
    from ehr_assets.model.batches import make_jepa_batch
    from ehr_assets.model.jepa import MomentumEncoder, Predictor
    from ehr_assets.model.losses import jepa_loss, sft_loss, step_losses
    from ehr_assets.model.precision import autocast, bf16_for
    from ehr_assets.specs import RecipeSpec, load_project
    from ehr_assets.train.data import TrainData


def make_recipe(args) -> tuple[RecipeSpec, int]:
    if args.shape == "demo":
        base = load_project(ROOT).recipes["jepa"].model_dump()
        base.update(name="bench", init_from=None)
        sizes = {"batch_size": args.batch, "seq_len": args.seq}
        base["training"].update({k: v for k, v in sizes.items() if v is not None})
        vocab = args.vocab or 2000
        r = RecipeSpec.model_validate(base)
        return r, vocab
    spec = {
        "name": "bench",
        "objective": "jepa",
        "backbone": {"architecture": "llama", "config": LLAMA_8B},
        "lora": {"rank": 16, "alpha": 32, "modules_to_save": []},
        "jepa": {"mask_ratio": 0.5},
        "training": {
            "steps": 1,
            "batch_size": args.batch or 4,
            "seq_len": args.seq or 2048,
            "gradient_checkpointing": not args.no_grad_ckpt,
            "precision": "bf16",
        },
    }
    return RecipeSpec.model_validate(spec), args.vocab or LLAMA_8B_VOCAB


def flops_per_forward(model, tokens: int, seq: int) -> float:
    cfg = model.get_base_model().config
    matmul = 0
    for name, mod in model.get_base_model().named_modules():
        if isinstance(mod, torch.nn.Linear) and "lora_" not in name:
            matmul += mod.in_features * mod.out_features
    return 2.0 * matmul * tokens + 2.0 * cfg.num_hidden_layers * seq * cfg.hidden_size * tokens


def parse_args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shape", choices=["llama8b", "demo"], default="llama8b")
    ap.add_argument("--batch", type=int)
    ap.add_argument("--seq", type=int)
    ap.add_argument("--vocab", type=int)
    ap.add_argument("--steps", type=int, default=5, help="timed steps per measurement (after 2 warm-up steps)")
    ap.add_argument("--no-grad-ckpt", action="store_true")
    ap.add_argument("--peak-tflops", type=float, default=772.0)
    ap.add_argument("--skip-plain", action="store_true", help="do not time the plain three-pass step")
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument("--wheels", type=Path, default=ROOT / ".whl", help="local wheels for missing packages")
    return ap.parse_args()


def build(recipe: RecipeSpec, vocab: int, device: torch.device, use_bf16: bool):
    """(model, predictor, momentum encoder, optimizer) of the recipe's shape, random weights, on ``device``."""
    tr = recipe.training
    data = TrainData([np.array([1, 5, 2])], [], vocab, 0, 3, 1, 2)
    with torch.device(device) if device.type == "cuda" else nullcontext():
        model, _ = build_model(recipe, data, log=lambda m: None, base_dtype=torch.bfloat16 if use_bf16 else None)
    model.to(device)
    model.train()
    if tr.gradient_checkpointing:
        enable_checkpointing(model)
    H = model.get_base_model().config.hidden_size
    predictor = Predictor(H, 2).to(device)
    momentum = MomentumEncoder(model)
    params = [p for p in model.parameters() if p.requires_grad] + list(predictor.parameters())
    opt = torch.optim.AdamW(params, lr=1e-4)
    return model, predictor, momentum, opt


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def timed(fn, n: int, device: torch.device) -> float:
    """Seconds per call of ``fn`` over ``n`` calls, after 2 warm-up calls (peak memory counted from there)."""
    for _ in range(2):
        fn()
    sync(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    t = time.perf_counter()
    for _ in range(n):
        fn()
    sync(device)
    return (time.perf_counter() - t) / n


def embed_fn(model, jb, autocast):
    """The ``embed`` measurement: a no-grad forward of the decoder stack, last-token pooling."""

    def embed():
        with torch.no_grad(), autocast():
            model.eval()
            h = decoder_of(model)[0](
                input_ids=jb["input_ids"], attention_mask=jb["attention_mask"], use_cache=False
            ).last_hidden_state
            h[:, -1].float().sum().item()
            model.train()

    return embed


def step_fn(model, predictor, momentum, opt, jb, autocast, fast: bool, jepa: bool, **kw):
    """One optimizer step: the optimized :func:`step_losses` (``fast``, ``kw`` its options) or the plain
    ``sft_loss`` + ``jepa_loss``; with the JEPA loss when ``jepa``."""

    def run():
        with autocast():
            if fast:
                ls, lj = step_losses(model, predictor, momentum, jb, sft=True, jepa=jepa, **kw)
            else:
                ls = sft_loss(model, jb["input_ids"], jb["attention_mask"])
                lj = jepa_loss(model, predictor, momentum, jb) if jepa else None
            loss = ls + (lj if lj is not None else 0)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        momentum.update(0.996)

    return run


def measure(args, parts, jb, autocast, device, tokens: int, F_: float) -> tuple[list[tuple], float]:
    """(rows of (name, tok/s, MFU, peak GB), the highest peak GB) of every measurement; NaN rows for OOM."""
    model, predictor, momentum, opt = parts
    rows = []
    peak = 0.0

    def step(fast: bool, jepa: bool, **kw):
        return step_fn(model, predictor, momentum, opt, jb, autocast, fast, jepa, **kw)

    def record(name, fn, mult):
        nonlocal peak
        try:
            s = timed(fn, args.steps, device)
        except torch.OutOfMemoryError:
            rows.append((name, float("nan"), float("nan"), float("nan")))
            torch.cuda.empty_cache()
            return
        mem = torch.cuda.max_memory_allocated() / 2**30 if device.type == "cuda" else float("nan")
        peak = max(peak, mem if mem == mem else 0.0)
        rows.append((name, tokens / s, mult * F_ / s / (args.peak_tflops * 1e12), mem))

    record("embed", embed_fn(model, jb, autocast), 1)
    record("sft", step(True, False), 2)
    record("smb", step(True, True), 5)
    if not args.skip_plain:
        record("sft_plain", step(False, False), 2)
        record("smb_plain", step(False, True), 5)
        # each optimization alone, to see which pays on this device
        record("smb_stack", step(True, True, stack=True, fused=False), 5)
        record("smb_fusedce", step(True, True, stack=False, fused=True), 5)
        record("smb_nostack", step(True, True, stack=False, fused=False), 5)
    return rows, peak


def report(
    args,
    recipe: RecipeSpec,
    vocab: int,
    device: torch.device,
    use_bf16: bool,
    build_s: float,
    rows: list[tuple],
    peak: float,
) -> Path:
    """Print the table and write the JSON result; returns its path."""
    tr = recipe.training
    B, L = tr.batch_size, tr.seq_len
    dev_name = torch.cuda.get_device_name() if device.type == "cuda" else "cpu"
    print(
        f"device {dev_name}; shape {args.shape}; batch {B} x seq {L}; vocab {vocab}; grad ckpt "
        f"{tr.gradient_checkpointing}; {'bf16' if use_bf16 else 'fp32'}; build {build_s:.1f}s"
    )
    print(f"{'measure':<10} {'tok/s':>10} {'MFU':>6} {'peak GB':>8}")
    for name, tps, mfu, mem in rows:
        print(f"{name:<10} {tps:>10,.0f} {mfu:>6.3f} {mem:>8.1f}")
    by = {n: (t, m) for n, t, m, _ in rows}
    result = {
        "device": dev_name,
        "embed_mfu": by["embed"][1],
        "sft_mfu": by["sft"][1],
        "smb_mfu": by["smb"][1],
        "embed_tok_s": by["embed"][0],
        "sft_tok_s": by["sft"][0],
        "smb_tok_s": by["smb"][0],
        "peak_gb": peak,
        "settings": {
            "shape": args.shape,
            "batch": B,
            "seq": L,
            "vocab": vocab,
            "lora_rank": recipe.lora.rank,
            "grad_ckpt": tr.gradient_checkpointing,
            "bf16": use_bf16,
            "steps": args.steps,
            "peak_tflops": args.peak_tflops,
            "torch": torch.__version__,
        },
        "variants": {n: {"tok_s": t, "mfu": m} for n, (t, m) in by.items() if n not in ("embed", "sft", "smb")},
    }
    tag = dev_name.replace(" ", "_") if args.shape == "llama8b" else f"{dev_name}_{args.shape}".replace(" ", "_")
    out = args.out or ROOT / "bench" / "results" / f"gpu_step_{tag}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    return out


def main() -> int:
    args = parse_args()
    ensure_packages(args.wheels)
    load_project_modules()
    device = pick_device()
    recipe, vocab = make_recipe(args)
    tr = recipe.training
    B, L = tr.batch_size, tr.seq_len
    use_bf16 = bf16_for(tr.precision, device)
    rng = np.random.default_rng(0)
    t0 = time.perf_counter()
    parts = build(recipe, vocab, device, use_bf16)
    build_s = time.perf_counter() - t0

    examples = [(rng.integers(5, vocab, size=L).astype(np.int64), L // 2) for _ in range(B)]
    jepa_cfg = recipe.jepa.model_copy(update={"max_future_tokens": L // 2})
    jb = make_jepa_batch(examples, L, jepa_cfg, 3, 0, rng).tensors(device)
    tokens = B * L
    F_ = flops_per_forward(parts[0], tokens, L)

    rows, peak = measure(args, parts, jb, lambda: autocast(device, use_bf16), device, tokens, F_)
    out = report(args, recipe, vocab, device, use_bf16, build_s, rows, peak)
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
