"""`python -m workers --stage S [--forever] [--concurrency N]`: same as `rocqcot worker`."""

import sys

from app.cli import main

sys.argv[1:1] = ["worker"]
main()
