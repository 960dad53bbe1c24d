"""What determines a synthetic trace (:class:`TraceSpec`), its presets, and the checks that name the flag to fix."""

from __future__ import annotations

import math
from dataclasses import dataclass

from tpsim.errors import InputError
from tpsim.tracegen.lognormal import truncation

NS_PER_S = 1_000_000_000

ARRIVALS = ("poisson", "gamma", "burst")
DISTS = ("fixed", "uniform", "lognormal")

#: LLMServingSim's ``--fix-len`` defaults (fixed input 128, fixed output 512)
DEFAULT_INPUT_LEN = 128
DEFAULT_OUTPUT_LEN = 512
#: lognormal shape when ``--*-sigma`` is not given
DEFAULT_SIGMA = 1.0
#: LLMServingSim's ``--max-kv-toks`` default
DEFAULT_MAX_TOTAL_TOKS = 16384
#: Llama-2 vocabulary; ids only feed prefix-cache block hashes
DEFAULT_VOCAB_SIZE = 32000
#: most requests in one trace (generation streams, so this bounds the file: about 0.7 GB without ids)
MAX_REQUESTS = 10_000_000
#: arrival rates in requests/s: one per 11.6 days up to one per nanosecond (arrivals are integer ns)
MIN_RATE = 1e-6
#: --start-s and --duration-s: 31.7 years keeps every arrival far inside tpsim run's horizon limits
MAX_SECONDS = 1e9
MAX_RATE = 1e9
#: prefix tokens held for --prefix-groups (8 bytes a token)
MAX_PREFIX_TOKENS = 50_000_000
#: a truncated lognormal must keep at least this share of the distribution
_MIN_TRUNCATED_MASS = 1e-6

# --- ShareGPT preset --------------------------------------------------------
# Source: the ShareGPT trace bundled with LLMServingSim 2.0 (casys-kaist/
# LLMServingSim, MIT licence, workloads/sharegpt-llama-3.1-8b-300-sps10.jsonl, made
# by workloads/examples/gen-llama-3.1-8b.sh from shibing624/sharegpt_gpt4 with
# multi-turn expansion, the Llama-3.1 tokenizer and the filters
# --min-input-toks 256 --min-output-toks 512 --max-kv-toks 16384).  Measured on
# that file (300 requests): input  mean 857, median 732, range 262-3998;
#                           output mean 653, median 632, range 512-1021.
# Fit: a lognormal truncated to the filter bounds ([256, 12288] input,
# [512, 4096] output; 12288 + 4096 = 16384 keeps input+output within
# --max-kv-toks) whose *truncated* median and mean equal the figures above
# (solved numerically; the naive untruncated fit mu = ln(median),
# sigma = sqrt(2 ln(mean/median)) ignores the 256/512 filters).
# Underlying parameters (natural log of tokens):
#   input:  mu = 6.57294, sigma = 0.55768  -> untruncated median 715.5, mean 835.8
#   output: mu = 6.38948, sigma = 0.20389  -> untruncated median 595.5, mean 608.1
# Truncated (what the preset draws, before integer rounding):
#   input median 732.0 / mean 857.0;  output median 632.0 / mean 653.0.
# Expected range of 300 draws matches the file's: P(input > 3998) = 0.1 %,
# P(output > 1021) = 0.5 %.
# Not ShareGPT in general: vLLM's single-turn benchmark sampling of
# ShareGPT_V3_unfiltered_cleaned_split gives much shorter requests (1000 prompts,
# Llama-3.1 tokenizer: 229,711 input / 203,068 generated tokens, i.e. means of
# ~230 / ~203; vllm-project/vllm PR #18566); use explicit --input-*/--output-*
# flags for such workloads.
SHAREGPT_SOURCE = ("LLMServingSim 2.0 workloads/sharegpt-llama-3.1-8b-300-sps10.jsonl "
                   "(ShareGPT, input mean 857 / median 732, output mean 653 / median 632)")
_SHAREGPT_INPUT = {"dist": "lognormal", "len": 835.8, "sigma": 0.5577, "min": 256, "max": 12288}
_SHAREGPT_OUTPUT = {"dist": "lognormal", "len": 608.1, "sigma": 0.2039, "min": 512, "max": 4096}
#: name -> (input length defaults, output length defaults, description)
PRESETS = {
    "sharegpt": (_SHAREGPT_INPUT, _SHAREGPT_OUTPUT, SHAREGPT_SOURCE),
}



@dataclass(frozen=True)
class TraceSpec:
    """Everything that determines a trace.  Validated on construction.

    Length fields left ``None`` take the preset's value (when ``preset`` is set
    and the side's ``*_dist`` is not given) or the built-in default; after
    construction they hold the values actually used.  Errors name the
    ``tpsim trace`` flag to fix.
    """

    num_reqs: int | None = None
    duration_s: float | None = None
    rate: float = 1.0
    arrival: str = "poisson"
    cv: float | None = None
    start_s: float = 0.0
    first_gap: bool = False
    seed: int = 0
    preset: str | None = None
    input_dist: str | None = None
    input_len: float | None = None
    input_min: int | None = None
    input_max: int | None = None
    input_sigma: float | None = None
    output_dist: str | None = None
    output_len: float | None = None
    output_min: int | None = None
    output_max: int | None = None
    output_sigma: float | None = None
    max_total_toks: int = DEFAULT_MAX_TOTAL_TOKS
    prefix_groups: int = 0
    prefix_len: int | None = None
    token_ids: bool | None = None
    vocab_size: int = DEFAULT_VOCAB_SIZE

    def __post_init__(self) -> None:
        self.validate()

    # -- validation -----------------------------------------------------------
    def _set(self, name: str, value) -> None:
        object.__setattr__(self, name, value)

    def validate(self) -> None:
        """Check and normalise every field; raise :class:`InputError` naming the flag."""
        self._check_count()
        self._check_arrivals()
        self._check_lengths()
        self._check_prefixes()
        self._check_token_ids()

    def _check_count(self) -> None:
        if self.num_reqs is not None and self.duration_s is not None:
            raise InputError("give --num-reqs N or --duration-s S, not both")
        if self.num_reqs is None and self.duration_s is None:
            raise InputError("--num-reqs N (or --duration-s S) is required")
        if self.num_reqs is not None:
            n = _int(self.num_reqs, "--num-reqs")
            if n < 1:
                raise InputError(f"--num-reqs must be >= 1, got {n}")
            if n > MAX_REQUESTS:
                raise InputError(f"--num-reqs must be <= {MAX_REQUESTS}, got {n}; split the trace")
            self._set("num_reqs", n)

    def _check_arrivals(self) -> None:
        if self.arrival not in ARRIVALS:
            raise InputError(f"--arrival must be one of {', '.join(ARRIVALS)}; got {self.arrival!r}")
        rate = _float(self.rate, "--rate")
        if rate != 0 and not MIN_RATE <= rate <= MAX_RATE:
            raise InputError(f"--rate must be 0 (all requests at --start-s) or between {MIN_RATE:g} and {MAX_RATE:g} "
                             f"requests/s, got {rate:g}")
        self._set("rate", rate)
        if self.cv is not None:
            if self.arrival != "gamma":
                raise InputError(f"--cv applies only to --arrival gamma (got --arrival {self.arrival}); drop --cv")
            cv = _float(self.cv, "--cv")
            if cv <= 0:
                raise InputError(f"--cv must be > 0 (1 = Poisson, > 1 burstier), got {cv:g}")
            self._set("cv", cv)
        elif self.arrival == "gamma":
            self._set("cv", 1.0)
        start = _float(self.start_s, "--start-s")
        if not 0 <= start <= MAX_SECONDS:
            raise InputError(f"--start-s must be between 0 and {MAX_SECONDS:g} seconds, got {start:g}")
        self._set("start_s", start)
        if self.duration_s is not None:
            d = _float(self.duration_s, "--duration-s")
            if not 0 < d <= MAX_SECONDS:
                raise InputError(f"--duration-s must be > 0 and <= {MAX_SECONDS:g} seconds, got {d:g}")
            if self.is_burst:
                raise InputError("--duration-s needs a positive --rate and --arrival poisson or gamma; "
                                 "for a burst give --num-reqs")
            if rate * d > MAX_REQUESTS:
                raise InputError(f"--rate x --duration-s = {rate * d:.0f} requests exceeds {MAX_REQUESTS}; "
                                 "shorten --duration-s")
            self._set("duration_s", d)
        if not isinstance(self.first_gap, bool):
            raise InputError(f"--first-gap must be true or false, got {self.first_gap!r}")
        self._set("seed", _int(self.seed, "--seed"))

    def _check_lengths(self) -> None:
        total = _int(self.max_total_toks, "--max-total-toks")
        if total < 2:
            raise InputError(f"--max-total-toks must be >= 2 (one input and one output token), got {total}")
        self._set("max_total_toks", total)
        if self.preset is not None and self.preset not in PRESETS:
            raise InputError(f"--preset must be one of {', '.join(PRESETS)}; got {self.preset!r}")
        for side in ("input", "output"):
            self._resolve_lengths(side)
        in_lo, in_hi = self.length_bounds("input")
        out_lo, _ = self.length_bounds("output")
        if in_hi > total - 1:
            raise InputError(f"{self._longest_input_flag()} ({in_hi}) must leave room for one output token within "
                             f"--max-total-toks ({total}); lower it or raise --max-total-toks")
        if in_lo + out_lo > total:
            raise InputError(f"the shortest input ({in_lo}) plus the shortest output ({out_lo}) exceed "
                             f"--max-total-toks ({total}); lower the lengths or raise --max-total-toks")

    def _longest_input_flag(self) -> str:
        return "--input-len" if self.input_dist == "fixed" else "--input-max"

    def _check_prefixes(self) -> None:
        groups = _int(self.prefix_groups, "--prefix-groups")
        if groups < 0:
            raise InputError(f"--prefix-groups must be >= 0, got {groups}")
        most = self.num_reqs if self.num_reqs is not None else MAX_REQUESTS
        if groups > most:
            raise InputError(f"--prefix-groups ({groups}) must not exceed the number of requests ({most})")
        self._set("prefix_groups", groups)
        if groups == 0:
            if self.prefix_len is not None:
                raise InputError("--prefix-len needs --prefix-groups G >= 1")
            return
        if self.prefix_len is None:
            raise InputError("--prefix-groups needs --prefix-len P (shared prompt tokens per group)")
        plen = _int(self.prefix_len, "--prefix-len")
        if plen < 1:
            raise InputError(f"--prefix-len must be >= 1, got {plen}")
        in_hi = self.length_bounds("input")[1]
        if plen + 1 > in_hi:
            raise InputError(f"--prefix-len ({plen}) must be smaller than the longest input ({in_hi}, "
                             f"from {self._longest_input_flag()}); each prompt needs at least one token after the "
                             "prefix")
        if groups * plen > MAX_PREFIX_TOKENS:
            raise InputError(f"--prefix-groups x --prefix-len = {groups * plen:,} prefix tokens exceeds "
                             f"{MAX_PREFIX_TOKENS:,}; use fewer or shorter prefixes")
        out_lo, total = self.length_bounds("output")[0], self.max_total_toks
        if plen + 1 + out_lo > total:
            raise InputError(f"--prefix-len ({plen}) plus one token plus the shortest output ({out_lo}) "
                             f"exceed --max-total-toks ({total})")
        self._set("prefix_len", plen)

    def _check_token_ids(self) -> None:
        groups = self.prefix_groups
        if self.token_ids is None:
            self._set("token_ids", groups > 0)
        elif not isinstance(self.token_ids, bool):
            raise InputError(f"--token-ids must be true or false, got {self.token_ids!r}")
        elif not self.token_ids and groups > 0:
            raise InputError("--no-token-ids conflicts with --prefix-groups: shared prefixes exist only "
                             "in the token ids; drop --no-token-ids")
        vocab = _int(self.vocab_size, "--vocab-size")
        if vocab < 2:
            raise InputError(f"--vocab-size must be >= 2, got {vocab}")
        if groups > 0 and vocab ** min(self.prefix_len, 16) < 2 * groups:
            raise InputError(f"--vocab-size {vocab} is too small to give {groups} groups distinct prefixes; "
                             "raise --vocab-size or --prefix-len")
        self._set("vocab_size", vocab)

    def _resolve_lengths(self, side: str) -> None:
        flag = f"--{side}"
        names = {k: f"{side}_{k}" for k in ("dist", "len", "min", "max", "sigma")}
        vals = {k: getattr(self, n) for k, n in names.items()}
        if self.preset is not None and vals["dist"] is None:
            preset = PRESETS[self.preset][0 if side == "input" else 1]
            for k, v in preset.items():
                if vals[k] is None:
                    vals[k] = v
        dist = vals["dist"] if vals["dist"] is not None else "fixed"
        if dist not in DISTS:
            raise InputError(f"{flag}-dist must be one of {', '.join(DISTS)}; got {dist!r}")
        resolve = {"fixed": _fixed, "uniform": _uniform, "lognormal": _lognormal}[dist]
        length, lo, hi, sigma = resolve(flag, side, vals["len"], vals["min"], vals["max"], vals["sigma"],
                                        self.max_total_toks)
        for k, v in (("dist", dist), ("len", length), ("min", lo), ("max", hi), ("sigma", sigma)):
            self._set(names[k], v)

    # -- derived --------------------------------------------------------------
    @property
    def is_burst(self) -> bool:
        return self.arrival == "burst" or self.rate == 0

    def length_bounds(self, side: str) -> tuple[int, int]:
        """Smallest and largest length one side can draw (before the prefix raise and output cap)."""
        dist = getattr(self, f"{side}_dist")
        if dist == "fixed":
            n = getattr(self, f"{side}_len")
            return n, n
        return getattr(self, f"{side}_min"), getattr(self, f"{side}_max")


# -- one side's lengths, by distribution: (len, min, max, sigma) as used ------------------------
def _fixed(flag: str, side: str, length, lo, hi, sigma, total: int) -> tuple:
    if lo is not None or hi is not None:
        raise InputError(f"{flag}-min/{flag}-max do not apply to {flag}-dist fixed; "
                         f"use {flag}-dist uniform or lognormal")
    if sigma is not None:
        raise InputError(f"{flag}-sigma applies only to {flag}-dist lognormal")
    if length is None:
        length = DEFAULT_INPUT_LEN if side == "input" else DEFAULT_OUTPUT_LEN
    length = _float(length, f"{flag}-len")
    if not length.is_integer() or length < 1:
        raise InputError(f"{flag}-len must be a whole number >= 1 for {flag}-dist fixed, got {length:g}")
    return int(length), lo, hi, sigma


def _uniform(flag: str, side: str, length, lo, hi, sigma, total: int) -> tuple:
    if length is not None:
        raise InputError(f"{flag}-len does not apply to {flag}-dist uniform; give {flag}-min and {flag}-max")
    if sigma is not None:
        raise InputError(f"{flag}-sigma applies only to {flag}-dist lognormal")
    if lo is None or hi is None:
        raise InputError(f"{flag}-dist uniform needs both {flag}-min and {flag}-max")
    lo, hi = _bounds(lo, hi, flag)
    return length, lo, hi, sigma


def _lognormal(flag: str, side: str, length, lo, hi, sigma, total: int) -> tuple:
    if length is None:
        raise InputError(f"{flag}-dist lognormal needs {flag}-len (the mean, in tokens)")
    length = _float(length, f"{flag}-len")
    if length <= 0:
        raise InputError(f"{flag}-len must be > 0, got {length:g}")
    sigma = _float(sigma if sigma is not None else DEFAULT_SIGMA, f"{flag}-sigma")
    if sigma <= 0:
        raise InputError(f"{flag}-sigma must be > 0, got {sigma:g}")
    lo, hi = _bounds(1 if lo is None else lo, total - 1 if hi is None else hi, flag)
    if truncation(math.log(length) - sigma * sigma / 2, sigma, lo, hi)[2] < _MIN_TRUNCATED_MASS:
        raise InputError(f"{flag}-min/{flag}-max ({lo}-{hi}) exclude almost all of the lognormal "
                         f"(mean {length:g}, sigma {sigma:g}); widen the bounds or change {flag}-len")
    return length, lo, hi, sigma


# -- helpers --------------------------------------------------------------------
def _int(value, flag: str) -> int:
    if isinstance(value, bool):
        raise InputError(f"{flag} must be an integer, got {value!r}")
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if not isinstance(value, int):
        raise InputError(f"{flag} must be an integer, got {value!r}")
    return value


def _float(value, flag: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise InputError(f"{flag} must be a number, got {value!r}")
    value = float(value)
    if not math.isfinite(value):
        raise InputError(f"{flag} must be a finite number, got {value!r}")
    return value


def _bounds(lo, hi, flag: str) -> tuple[int, int]:
    lo, hi = _int(lo, f"{flag}-min"), _int(hi, f"{flag}-max")
    if lo < 1:
        raise InputError(f"{flag}-min must be >= 1 token, got {lo}")
    if lo > hi:
        raise InputError(f"{flag}-min ({lo}) must be <= {flag}-max ({hi})")
    return lo, hi
