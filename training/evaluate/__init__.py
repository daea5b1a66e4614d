"""``cxr-studio evaluate``: image quality, prompt alignment, memorisation and usefulness of a model
pack, measured on held-out real data, written as an HTML report with plots and a JSON of every figure.

Modules
- ``options``    the settings (plain Python, for the command line's help)
- ``data``       manifest -> classes, real images, prompts per class
- ``classifier`` the evaluation CNN trained on the train split (feature space, alignment, utility)
- ``metrics``    contrast, sharpness, entropy, Fréchet distance, patch distance, AUROC, bootstrap
- ``inception``  optional standard FID features from Inception weights on disk
- ``context``    the state a run carries from section to section (checked inputs, image sets, progress)
- ``shared``     real images, the evaluation classifier, generation: what the sections build on
- ``sections``   one module per report section: its computation, figures and HTML
- ``report``     the report shell: report.json, the page frame of report.html, figure and HTML helpers
- ``run``        the orchestrator: check the inputs, run the chosen sections, write the report
- ``cli``        ``register_evaluate(subparsers)``
"""
