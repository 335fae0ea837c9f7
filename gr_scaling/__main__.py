import sys

from gr_scaling.cli import main

sys.exit(main())
