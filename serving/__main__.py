"""LLMServingSim-compatible entry point: ``python -m serving --cluster-config ... --dataset ...``."""

import sys

from tpsim.commands.run import main_serving

sys.exit(main_serving(sys.argv[1:]))
