"""The ``studio`` command: parses arguments and wires them to the layers below.

``main`` holds the click group and the error handling, ``common`` opens the config and the
store, ``run``, ``records`` (list/show/get/delete) and ``maintenance`` (gc/sync/cache) hold the
commands, ``params`` the option mini-languages as click types, ``tables`` the tables of ``list``
and ``show``. No storage logic lives here.
"""

__all__: list[str] = []
