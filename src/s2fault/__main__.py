import sys

from s2fault.cli import main

sys.exit(main())
