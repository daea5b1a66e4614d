"""DICOM and PACS; generation never imports this package. What each module owns:

- ``dataset``: a generated image as a DICOM dataset marked synthetic (``build_dataset``, one helper per
  module of the SC or DX IOD), ``StudyContext`` / ``SyntheticImageInfo``, ``write_dicom`` with its codecs.
- ``reading``: DICOM files read back to pixels, as stored or as a viewer shows them.
- ``studies``: many studies at once (``make-studies``) and, on request, their DICOMDIR.
- ``nodes``: the user's PACS nodes, kept as JSON in the user config folder (the CLI and the app share them).
- ``pacs``: what every send shares: ``PacsNode`` and its timeouts, status words, ``SendEvent`` /
  ``SendReport``, the retrying send loop and the whole-file checks every file passes before it goes.
- ``dimse``: associations over pynetdicom: C-ECHO (``echo``) and C-STORE (``send_files``).
- ``stow``: DICOMweb STOW-RS over HTTP(S) (``stow_rs``): no redirects followed, batches per request.
- ``outbox``: the folder of files waiting for their node, ``failed/`` for bad ones, the attempts log;
  ``Outbox.send`` hands a node's files to ``dimse`` or ``stow``.
"""
