"""An opened store: repositories, run records, and the uploads that keep a remote store current.

``open`` builds a ``Store`` from the configuration; ``records`` reads and writes run records
(the pointer written last); ``sync``, ``transfer`` and ``journal`` publish staged captures to
a remote store in the background (``open`` builds their parts and hands them in);
``holds`` keeps staged content from ``staging_gc`` until its record is pending; ``artifacts``
reads an artifact back; ``gc`` and ``staging_gc`` free what nothing refers to.
"""

__all__: list[str] = []
