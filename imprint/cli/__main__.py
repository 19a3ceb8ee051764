"""python -m imprint.cli"""
from imprint.cli import console

console()
