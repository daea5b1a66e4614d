"""Training data: importers that turn data sets into one manifest format (JSON Lines).

- ``manifest``: the record format, patient-level splits, reading/writing, the import summary;
- ``captions``: clinical captions from labels (a seeded grammar that round-trips through
  ``engine.findings``);
- ``importers``: pediatric (Kermany), IU X-ray (Open-i), NIH ChestX-ray14, CSV and DICOM;
- ``cli``: the ``cxr-studio import`` command.
"""
