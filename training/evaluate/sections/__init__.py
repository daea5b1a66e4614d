"""The report's sections, one module each: its computation (``section_NAME(ctx) -> dict``), its
figures (``make_figures(report, ctx, folder)``) and its part of report.html (``render_html(report)``).

``run`` calls them in report order; ``report`` draws the page around them.
"""
