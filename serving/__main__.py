"""LLMServingSim-compatible entry point: ``python -m serving --cluster-config ... --dataset ...``."""

import gc
import sys

# A run allocates many objects that live until it ends (configs, token ids, caches) and few reference
# cycles: collecting every 700 allocations re-scans them for nothing (about 3 % of a short run)
gc.set_threshold(50_000, 20, 20)

from tpsim.commands.run import main_serving  # noqa: E402
from tpsim.console import exit_process  # noqa: E402

exit_process(main_serving(sys.argv[1:]))
