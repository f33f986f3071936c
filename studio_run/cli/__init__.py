"""The ``studio`` command: parses arguments and wires them to the layers below.

``main`` holds the click group and commands, ``params`` the option mini-languages as click
types, ``tables`` the rich tables of ``list`` and ``show``. No storage logic lives here.
"""

__all__: list[str] = []
