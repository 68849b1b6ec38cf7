"""Sliders to play with: chapter 01's fuzzy-select tolerance, chapter 03's placements, chapter 08's
augmentations.

They need a live notebook (Jupyter or Colab) with ``ipywidgets``. Where nobody can move a slider
(the rendered book, a headless papermill run) the chapter draws the same picture statically just
before the slider cell, so nothing is lost there.
"""

from __future__ import annotations

from typing import Callable


def _control(name: str, spec):
    """A widget for one keyword of :func:`explore`: a list -> a dropdown; a tuple (lo, hi, step[, value])
    -> an integer slider if all are integers, else a float slider."""
    import ipywidgets as w

    if isinstance(spec, list):
        return w.Dropdown(options=spec, value=spec[0], description=name)
    lo, hi, step, *value = spec
    value = value[0] if value else lo
    kind = w.IntSlider if all(isinstance(v, int) for v in (lo, hi, step, value)) else w.FloatSlider
    # Redraw on release, not on every pixel of a drag: each draw recomputes a figure.
    return kind(min=lo, max=hi, step=step, value=value, description=name, continuous_update=False)


def explore(draw: Callable[..., None], **controls):
    """Call ``draw(**values)`` again whenever a control moves, and show the controls above its output.

    Each keyword names an argument of ``draw``: ``(lo, hi, step)`` or ``(lo, hi, step, start)`` gives
    a slider, a list of choices a dropdown. Returns the ``ipywidgets.interactive`` (already shown),
    or None without ipywidgets, after saying how to get it.
    """
    try:
        import ipywidgets as w
    except ImportError:
        print("the sliders need ipywidgets (pip install ipywidgets); the figure above shows the same")
        return None
    return w.interact(draw, **{name: _control(name, spec) for name, spec in controls.items()})
