"""DICOM and PACS: ``dataset`` builds and writes the DICOM files of a generated image, ``studies`` plans
and writes many studies at once (``make-studies``, DICOMDIR), ``nodes`` keeps the user's PACS nodes, and
``pacs`` sends (C-ECHO / C-STORE, STOW-RS) through the outbox. Generation never imports this package."""
