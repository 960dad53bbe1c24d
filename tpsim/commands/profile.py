"""``tpsim profile``: measure a profile bundle on this machine's GPU (or CPU, for tests).

Example (on the GPU the bundle is for)::

    tpsim profile --model meta-llama/Llama-3.1-8B --tp 2 --hardware H100 \\
        --out profiles/H100/meta-llama/Llama-3.1-8B/bf16/tp2/

times every op of one decoder layer, the embedding, the LM head, the sampler
and attention at the per-GPU shapes of tensor parallelism 2, with random
weights, and writes the bundle (format: :mod:`tpsim.perf.bundle`, how it is
measured: :mod:`tpsim.perf.profiler`).  ``tpsim run --perf-model profile``
then finds it under ``profiles/``.  Needs torch (``pip install 'tpsim[profile]'``).
"""

from __future__ import annotations

import sys
from pathlib import Path


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "profile", help="measure per-op latencies into a profile bundle (needs torch)",
        description="Time each op of one decoder layer, attention, the LM head and the sampler at the per-GPU "
                    "shapes of tensor parallelism N, with random weights, and write a profile bundle.")
    p.add_argument("--model", required=True, help="model name (configs/model/<name>.json) or a config.json path")
    p.add_argument("--tp", type=int, default=1, help="tensor-parallel degree whose per-GPU shapes are timed")
    p.add_argument("--dtype", choices=["bfloat16", "float16", "float32"], default=None,
                   help="weight and activation dtype (default: the model's torch_dtype)")
    p.add_argument("--kv-cache-dtype", choices=["auto"], default="auto",
                   help="only 'auto' (KV in the activation dtype); fp8 KV is not profiled yet")
    p.add_argument("--device", default="cuda", help="cuda, cuda:N or cpu (cpu: for tests, with --grid tiny)")
    p.add_argument("--grid", choices=["tiny", "small", "default"], default="default",
                   help="token/context grid: tiny (CPU tests, seconds), small (minutes), default")
    p.add_argument("--hardware", default=None,
                   help="hardware catalog name of this GPU: recorded in meta.yaml (then only runs on that hardware "
                        "use the bundle) and used for the default --out")
    p.add_argument("--out", default=None,
                   help="bundle folder (default: profiles/<HARDWARE>/<org>/<model>/<variant>/tp<N>/)")
    p.add_argument("--warmup", type=int, default=None, help="untimed calls first (default 3 on GPU, 1 on CPU)")
    p.add_argument("--repeats", type=int, default=None, help="timed samples, median kept (default 10 GPU, 3 CPU)")
    p.add_argument("--inner", type=int, default=None, help="back-to-back calls per sample (default 5 GPU, 2 CPU)")
    p.add_argument("--max-graph-batch", type=int, default=512,
                   help="largest token count also timed as a CUDA-graph replay (vLLM's default capture size)")
    p.add_argument("--no-graphs", action="store_true", help="eager timings only")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=handle)


def handle(args) -> int:
    from tpsim.config.model import load_model
    from tpsim.errors import InputError
    from tpsim.memory import check_parallelism

    try:
        import torch  # noqa: F401
    except ImportError:
        raise InputError("tpsim profile needs PyTorch, which is not installed; pip install 'tpsim[profile]' "
                         "(or pip install torch)") from None
    from tpsim.config.catalog import PACKAGE_ROOT
    from tpsim.perf import profiler
    from tpsim.perf.bundle import bundle_dir

    if args.tp < 1:
        raise InputError(f"--tp must be >= 1, got {args.tp}")
    model = load_model(args.model)
    if model.is_moe:
        from tpsim.errors import NotSupportedError

        raise NotSupportedError(f"--model {args.model}: a mixture-of-experts model; tpsim profile times dense "
                                "decoder layers only, choose a dense model")
    check_parallelism(model, args.tp, 1, f"--model {args.model} --tp {args.tp}")
    dtype = args.dtype or model.torch_dtype
    if dtype not in profiler.TORCH_DTYPES:
        raise InputError(f"--dtype {dtype}: profiling supports bfloat16, float16 and float32")
    device = args.device
    cuda = device.startswith("cuda")
    if cuda and not torch.cuda.is_available():
        raise InputError(f"--device {device}: torch sees no CUDA GPU here; run on the GPU to profile, or use "
                         f"--device cpu --grid tiny to test the tool")
    if not cuda and device != "cpu":
        raise InputError(f"--device {device}: choose cuda, cuda:N or cpu")
    for flag, value, low in (("--warmup", args.warmup, 0), ("--repeats", args.repeats, 1), ("--inner", args.inner, 1),
                             ("--max-graph-batch", args.max_graph_batch, 0)):
        if value is not None and value < low:
            raise InputError(f"{flag} must be >= {low}, got {value}")
    if cuda:
        torch.cuda.set_device(torch.device(device))
    hardware = args.hardware
    if args.out:
        out = Path(args.out)
    else:
        if not hardware:
            raise InputError("give --hardware NAME (the configs/hardware entry of this GPU) or --out DIR")
        out = bundle_dir(PACKAGE_ROOT / "profiles", hardware, model.name, dtype, "auto", args.tp)
    if out.exists() and not out.is_dir():
        raise InputError(f"--out {out}: exists and is not a folder")
    warmup = args.warmup if args.warmup is not None else (3 if cuda else 1)
    repeats = args.repeats if args.repeats is not None else (10 if cuda else 3)
    inner = args.inner if args.inner is not None else (5 if cuda else 2)

    def log(msg: str) -> None:
        sys.stderr.write(f"tpsim profile: {msg}\n")

    log(f"{model.name} tp={args.tp} {dtype} on {device}, grid {args.grid} -> {out}")
    path, meta = profiler.profile_to_bundle(
        out, model, args.tp, dtype, device, args.grid, hardware=hardware, warmup=warmup, repeats=repeats,
        inner=inner, max_graph_batch=args.max_graph_batch, graphs=not args.no_graphs, seed=args.seed, log=log)
    size = sum(f.stat().st_size for f in Path(path).iterdir() if f.is_file())
    print(f"wrote {path} ({size / 1024:.0f} KiB, {meta['elapsed_s']} s): {meta['gpu']}, torch {meta['torch']}")
    return 0
