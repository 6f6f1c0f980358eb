import sys

from theory.cli import standalone

sys.exit(standalone())
