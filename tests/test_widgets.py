"""The sliders: the controls chapters ask for, the function redrawn with their values, a fallback
without ipywidgets."""

import sys

from depthmask_utils import widgets


def test_explore_builds_the_controls_and_calls_the_function(capsys):
    seen = []
    ui = widgets.explore(lambda tolerance, scale, mode: seen.append((tolerance, scale, mode)),
                         tolerance=(0, 255, 4, 24), scale=(0.1, 0.9, 0.05, 0.35), mode=["affine", "flip"])
    kinds = {c.description: type(c).__name__ for c in ui.widget.children[:3]}
    assert kinds == {"tolerance": "IntSlider", "scale": "FloatSlider", "mode": "Dropdown"}
    assert seen[0] == (24, 0.35, "affine")  # drawn once with the start values
    ui.widget.children[0].value = 40
    assert seen[-1] == (40, 0.35, "affine")  # and again when a control moves
    assert not ui.widget.children[0].continuous_update


def test_without_ipywidgets_it_says_so(monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "ipywidgets", None)  # import fails
    assert widgets.explore(lambda x: None, x=(0, 1, 1)) is None
    assert "pip install ipywidgets" in capsys.readouterr().out
