import sys

from tinyodl.cli import main

sys.exit(main())
