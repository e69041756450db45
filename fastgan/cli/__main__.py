"""`python -m fastgan.cli`, as `python -m fastgan`."""
import sys

from fastgan.cli import main

sys.exit(main())
