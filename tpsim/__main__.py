import sys

from tpsim.cli import main

sys.exit(main())
