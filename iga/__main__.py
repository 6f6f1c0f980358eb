import sys

from iga.cli import main

sys.exit(main())
