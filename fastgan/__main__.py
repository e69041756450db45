import sys

try:
    from fastgan.cli import main
except KeyboardInterrupt:     # Ctrl-C while torch is being imported: one line, no traceback
    print("fastgan: interrupted", file=sys.stderr)
    sys.exit(130)

sys.exit(main())
