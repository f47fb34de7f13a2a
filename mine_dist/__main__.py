import sys

from mine_dist.cli import main

sys.exit(main())
