"""One module per detector, each readable top to bottom in the same order:
config -> head -> targets -> loss -> inference -> model.

Detectors are built by name through :func:`fcos_from_scratch.models.build_model`;
``fcos_from_scratch.models.registry`` lists them.
"""
