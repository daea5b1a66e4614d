"""The ``cxr-studio`` command line: ``main`` (the parser, ``generate`` and ``info``), ``dicom``
(``make-studies``, ``pacs``, ``send``, ``outbox``) and ``grid``. Nothing outside the command line imports
these modules; the app and training call the engine's own modules."""
