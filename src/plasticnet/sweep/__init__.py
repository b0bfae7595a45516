"""Sweeps: many runs of one task (conditions x grid points x seeds) trained on Ray, summarised as the papers do.

``spec`` reads a sweep file, ``runs`` trains one run and keeps its markers, ``ray_driver`` schedules the runs on
Ray (the optional ``sweep`` extra, imported only there), ``report`` gives ``sweep status`` and ``sweep report``.
The file format is in ``docs/sweeps.md``.
"""

from .spec import Run, Sweep, load

__all__ = ["Run", "Sweep", "load"]
