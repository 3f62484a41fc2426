"""python -m ops ... : the tickstack CLI, for when the console script is not on PATH."""
from ops.cli import main

main()
