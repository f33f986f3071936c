"""The ``studio`` command: parses arguments and wires them to the layers below.

``main`` holds the click group and the error handling, ``common`` opens the config and the
store, ``run``, ``records`` (list/show/get/delete), ``browse`` (ls/logs) and ``maintenance``
(gc/sync/cache) hold the commands, ``params`` the option mini-languages as click types,
``tables`` how records are printed (fitted tables, tab-separated, JSON). No storage logic
lives here.
"""

__all__: list[str] = []
