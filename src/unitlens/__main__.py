"""``python -m unitlens ...`` is the ``unitlens`` command."""
from unitlens.cli import main

main()
