"""The ``cxr-studio`` command line: ``main`` (the parser, ``info``, ``main()``), ``generate``, ``dicom``
(``make-studies``, ``pacs``, ``send``, ``outbox``), ``grid``, ``dataset`` (``make-dataset``), and ``common``
(exit codes, UsageError, the ``--model`` option, shared helpers). main imports the command modules, never
the reverse. Nothing outside the command line imports these modules; the app and training call the
engine's own modules (engine.pack holds the card text and the model choice)."""
