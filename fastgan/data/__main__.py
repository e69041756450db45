import sys

from fastgan.cli.data import main

sys.exit(main(prog="python -m fastgan.data"))
