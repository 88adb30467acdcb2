"""``python -m jisaku.cli``: the same as the ``jisaku`` command."""

from jisaku.cli import main

main()
