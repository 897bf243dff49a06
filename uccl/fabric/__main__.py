"""python -m uccl.fabric: the uccl-fabric command."""

from uccl.fabric.cli import main

main()
