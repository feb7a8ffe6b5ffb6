import sys

from facevae.cli import main

sys.exit(main())
