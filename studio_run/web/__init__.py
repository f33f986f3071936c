"""``studio ui``: a local web page over a store, server-rendered (Starlette + Jinja2 + htmx).

It reads through the same store and record modules as the CLI; it only parses requests and wires
them to those modules. Its dependencies are the ``[ui]`` extra, imported only by ``studio ui``.

``app`` builds the application (routes, the guard, error pages); ``security`` holds the rules
(Host check, sign-in token off loopback, CSRF, path checks); ``context`` what every page needs;
one module per kind of page: ``runs`` (the home page, from ``store.runindex``), ``run_page``
(a run, its file tree), ``logs`` (the live log box), ``downloads`` (tar, tar.gz, single files,
streamed from ``store.archive``), ``compare``, ``actions`` (Stop, Delete) and ``tensorboard``
(the TensorBoard button). ``templates/`` and ``static/`` (htmx, one stylesheet) ship in the package.
"""

__all__: list[str] = []
