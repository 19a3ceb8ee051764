"""python -m imprint.cli"""
import sys

from imprint.cli import main

sys.exit(main())
