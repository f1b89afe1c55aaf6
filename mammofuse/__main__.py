"""``python -m mammofuse``: the ``mammofuse`` command."""

from mammofuse.entry import main

try:
    main()
finally:
    # CPython notes a Ctrl-C that stopped code run from a string (dataclasses and namedtuple build their methods
    # so, while a command imports) as never handled, even when caught, and under -m then exits by SIGINT instead
    # of with the command's code (130). Running a string clears that note.
    exec("")
