import sys

from mkdseg.cli import main

sys.exit(main())
