import gc
import sys

if sys.argv[1:2] == ["run"]:
    # see serving/__main__.py: a simulation keeps most of what it allocates until it ends
    gc.set_threshold(50_000, 20, 20)

from tpsim.cli import main  # noqa: E402

code = main()
if sys.argv[1:2] == ["run"]:
    from tpsim.console import exit_process

    exit_process(code)
sys.exit(code)
