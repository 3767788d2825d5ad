"""`python -m kit VERB`: the process set up first, then the CLI."""
import sys

from kit.training import runtime

# Before anything imports JAX: its CPU threads take their malloc arenas when they start, and
# its backends read the device flags once.
runtime.prepare_process()

from kit.cli.main import main  # after the set-up above, on purpose

sys.exit(main())
