import sys

from paper_figures.cli import standalone

sys.exit(standalone())
