"""Importers: data sets in their own layouts -> manifest records (:mod:`engine.manifest`).

Kinds (``run.IMPORTERS``), each a function ``(paths, manifest, options) -> ImportResult``:
- ``pediatric``: the Kermany paediatric set, as ``labels.csv`` (file, label, patient_id) beside an
  ``images/`` folder, or the original Kaggle ``chest_xray/{train,val,test}/{NORMAL,PNEUMONIA}``
  layout (type and patient from names like ``person1_bacteria_1.jpeg``, ``IM-0115-0001.jpeg``);
- ``iu-xray``: Open-i's ``NLMCXR_reports.tgz`` (or its extracted XML folder) and ``NLMCXR_png``:
  FINDINGS + IMPRESSION text with "XXXX" cleaned, MeSH kept as the label, frontal images only
  unless asked (view from a projections CSV such as Kaggle's ``indiana_projections.csv``, else
  guessed from left-right symmetry, see :func:`iu_xray.symmetry_score`);
- ``nih``: ``Data_Entry_2017*.csv(.gz)`` (or the subset's ``images.csv``) and image folders:
  captions from labels, age, sex and view, for the rows whose image is there;
- ``csv``: ``path,text[,findings][,patient_id][,view][,age][,sex][,label]`` with paths relative to the CSV;
- ``dicom``: folders of DICOM files, converted to PNG beside the manifest (modality LUT, VOI LUT
  or window, MONOCHROME1 inverted, percentile clipping, optional CLAHE, 8 or 16 bit);
- ``hannover``: Hannover Medical School's COVID-19 films, ``data.csv`` and the image folder (adults,
  age band only; no per-image findings);
- ``merge``: several manifests -> one, image paths re-pointed, each source's splits kept.

Missing files, unreadable images and malformed rows are counted by reason in
``ImportResult.skipped`` and never stop an import (the CSV, DICOM and Hannover importers also name each one
in ``ImportResult.skipped_items``); only arguments that cannot work (a path that does not exist, a
file of the wrong kind, a table that cannot be read at all) raise :class:`ImporterError`, naming
the file (and line).

One module per kind (``pediatric``, ``iu_xray``, ``nih``, ``csv_table``, ``dicom``, ``hannover``,
``merge``), what they share in ``common``, and ``run``: :func:`~training.data.importers.run.run_import`
checks the arguments, runs one importer, splits by patient and writes the manifest.
"""
