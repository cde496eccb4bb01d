"""``python -m open_autoglm`` runs the CLI."""

from open_autoglm.cli.main import main

main()
