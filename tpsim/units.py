"""Unit constants.  Names carry their unit; these are the only conversions.

GB = 1e9 bytes and GiB = 2**30 bytes.  Bandwidths are GB/s, which is exactly
one byte per nanosecond, so ``bytes / bw_gbps`` is a time in ns.
"""

NS_PER_S = 1_000_000_000
NS_PER_US = 1_000
NS_PER_MS = 1_000_000
GB = 1_000_000_000
GiB = 1 << 30
MiB = 1 << 20

#: bytes per element for each dtype name accepted on the command line
DTYPE_BYTES = {
    "float32": 4,
    "float16": 2,
    "bfloat16": 2,
    "fp8": 1,
}

#: short names used in profile-bundle folder names (LLMServingSim's ``variant``)
DTYPE_SHORT = {"float32": "fp32", "float16": "fp16", "bfloat16": "bf16", "fp8": "fp8"}

#: Hugging Face ``torch_dtype`` spellings mapped to our names
HF_DTYPE_ALIASES = {
    "float32": "float32",
    "float": "float32",
    "float16": "float16",
    "half": "float16",
    "bfloat16": "bfloat16",
    "fp8": "fp8",
    "float8_e4m3fn": "fp8",
}
