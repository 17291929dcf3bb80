"""An environment module that calls sys.exit() when imported (tests/test_robustness.py)."""
import sys

sys.exit("exits_on_import: this module needs a GPU driver")
