import sys

from mixpeek_operator.cli import main

sys.exit(main())
