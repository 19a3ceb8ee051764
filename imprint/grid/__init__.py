"""Grids of variants x encoders x datasets x tasks (``imprint grid``) and their reports (``imprint report``):
the config and its checks, the plan, the runner, the protocols and the tables and figures."""
from imprint.core.errors import require

require(("pydantic", "pandas", "yaml"), "grid", "imprint grid and imprint report")
