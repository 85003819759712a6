import sys

from negminer.cli import main

sys.exit(main())
