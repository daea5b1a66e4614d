"""``cxr-studio evaluate``: image quality, prompt alignment, memorisation and usefulness of a model
pack, measured on held-out real data, written as an HTML report with plots and a JSON of every figure.

Modules
- ``options``    the settings (plain Python, for the command line's help)
- ``data``       manifest -> classes, real images, prompts per class
- ``classifier`` the evaluation CNN trained on the train split (feature space, alignment, utility)
- ``metrics``    contrast, sharpness, entropy, Fréchet distance, patch distance, AUROC, bootstrap
- ``inception``  optional standard FID features from Inception weights on disk
- ``run``        the orchestration, one function per report section
- ``report``     report.json, figures/*.png, report.html
- ``cli``        ``register_evaluate(subparsers)``
"""
