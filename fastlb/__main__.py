"""`python -m fastlb` is the `fastlb` command.

A Ctrl-C before the event loop's handler is installed (while fastlb imports its modules, a few
hundred milliseconds) ends the command quietly with 130, the shell's code for SIGINT, rather
than with a KeyboardInterrupt traceback; once serving, SIGINT is a graceful stop (app.py).
"""

import sys

try:
    from fastlb.cli import main

    code = main()
except KeyboardInterrupt:
    code = 130
sys.exit(code)
