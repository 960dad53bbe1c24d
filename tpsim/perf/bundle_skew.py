"""LLMServingSim's decode-skew correction of a profile bundle (``skew_fit.csv`` and ``meta.yaml``'s
``skew_fit``): the measured slowdown of a decode batch with uneven contexts, as an ``alpha`` per bucket."""

from __future__ import annotations

from bisect import bisect_left
from dataclasses import dataclass
from pathlib import Path

from tpsim.errors import InputError
from tpsim.perf.bundle_csv import _int_cell, _read_csv

SKEW_FIT_COLUMNS = ("pc", "n_label", "skew_rate_label", "kv_big_label", "kp_label", "alpha")


@dataclass
class SkewFit:
    """LLMServingSim's decode-skew correction: alpha by bucket, with a pooled default."""

    alphas: dict[str, float]
    alpha_default: float
    axes: dict  # n_bins/n_labels, skew_rate_bins/labels, kv_big_bins/labels, kp_bins/labels

    def __post_init__(self):
        self._memo: dict[tuple, float] = {}

    @staticmethod
    def label_index(bins, labels, value) -> int:
        """Bucket ``(bins[i], bins[i+1]]`` holding ``value`` (inclusive on the right, as LLMServingSim)."""
        i = bisect_left(bins, value, 1) - 1
        return i if i < len(labels) else len(labels) - 1

    def alpha(self, pc: int, n: int, skew_rate: float, kv_big: int, kp: int) -> float:
        a = self.axes
        rate = 0.0 if skew_rate < 0.0 else (1.0 if skew_rate > 1.0 else skew_rate)
        li = self.label_index
        return self.alpha_at((pc, li(a["n_bins"], a["n_labels"], n),
                              li(a["skew_rate_bins"], a["skew_rate_labels"], rate),
                              li(a["kv_big_bins"], a["kv_big_labels"], kv_big), li(a["kp_bins"], a["kp_labels"], kp)))

    def alpha_at(self, idx: tuple[int, int, int, int, int]) -> float:
        """Alpha for (pc, n bucket, skew-rate bucket, kv_big bucket, kv_prefill bucket) indices."""
        alpha = self._memo.get(idx)
        if alpha is None:
            a = self.axes
            key = "|".join((f"pc={idx[0]}", a["n_labels"][idx[1]], a["skew_rate_labels"][idx[2]],
                            a["kv_big_labels"][idx[3]], a["kp_labels"][idx[4]]))
            alpha = self._memo[idx] = self.alphas.get(key, self.alpha_default)
        return alpha


#: LLMServingSim's bucket axes when its meta.yaml predates ``skew_fit.bucket_axes``
DEFAULT_SKEW_AXES = {
    "n_bins": [0, 2, 4, 8, 16, 32, 64, 128, 1_000_000],
    "n_labels": ["n<=2", "n<=4", "n<=8", "n<=16", "n<=32", "n<=64", "n<=128", "n>128"],
    "kv_big_bins": [0, 1024, 4096, 16384, 1_000_000_000],
    "kv_big_labels": ["kvB<=1k", "kvB<=4k", "kvB<=16k", "kvB>16k"],
    "skew_rate_bins": [-0.01, 0.05, 0.15, 0.40, 0.70, 1.01],
    "skew_rate_labels": ["sr<=5%", "sr<=15%", "sr<=40%", "sr<=70%", "sr>70%"],
    "kp_bins": [-1, 0, 2048, 1_000_000_000],
    "kp_labels": ["kp=0", "kp<=2k", "kp>2k"],
}


def read_skew_fit(tp_dir: Path, meta: dict, tp: int) -> SkewFit | None:
    fit = meta.get("skew_fit")
    if not isinstance(fit, dict) or not fit.get("enabled"):
        return None
    per_tp = fit.get("per_tp") or {}
    entry = per_tp.get(tp, per_tp.get(str(tp)))
    if not isinstance(entry, dict):
        return None
    axes = entry.get("bucket_axes") or fit.get("bucket_axes") or DEFAULT_SKEW_AXES
    for key in DEFAULT_SKEW_AXES:
        if key not in axes:
            raise InputError(f"{tp_dir.parent / 'meta.yaml'}: skew_fit.bucket_axes lacks '{key}'")
    alphas: dict[str, float] = {}
    inline = entry.get("alpha_by_bucket")
    if isinstance(inline, dict):
        alphas.update({str(k): float(v) for k, v in inline.items()})
    path = tp_dir / "skew_fit.csv"
    if path.is_file():
        for line, r in _read_csv(path, SKEW_FIT_COLUMNS):
            try:
                alpha = float(r["alpha"])
            except ValueError:
                raise InputError(f"{path}:{line}: column alpha must be a number, got {r['alpha']!r}") from None
            key = f"pc={_int_cell(path, line, 'pc', r['pc'])}|{r['n_label']}|{r['skew_rate_label']}|" \
                  f"{r['kv_big_label']}|{r['kp_label']}"
            alphas[key] = alpha
    default = entry.get("alpha_default", fit.get("alpha_default", 0.0))
    return SkewFit(alphas, float(default or 0.0), axes)
