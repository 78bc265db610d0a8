import sys

from erab.cli import main

sys.exit(main())
