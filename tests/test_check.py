"""The exercise checks: a right answer passes, each common mistake gets its own hint, nothing raises."""

import numpy as np
import torch

from depthmask_utils import check, depth, metrics, models


def test_over(capsys):
    def right(fgp, bg):
        a = fgp[..., 3:] / 255
        return np.rint(fgp[..., :3] + bg * (1 - a)).astype(np.uint8)

    def doubled(fgp, bg):
        a = fgp[..., 3:] / 255
        return np.rint(fgp[..., :3] * a + bg * (1 - a)).astype(np.uint8)

    def truncated(fgp, bg):
        a = fgp[..., 3:] / 255
        return (fgp[..., :3] + bg * (1 - a)).astype(np.uint8)

    assert check.over(right)
    assert not check.over(doubled) and "again" in capsys.readouterr().out
    assert not check.over(truncated) and "round" in capsys.readouterr().out
    assert not check.over(lambda f, b: None) and "returned None" in capsys.readouterr().out
    assert not check.over(lambda f, b: 1 / 0) and "ZeroDivisionError" in capsys.readouterr().out


def test_foot_point(capsys):
    assert check.foot_point(depth.foot_point)
    assert not check.foot_point(lambda m: depth.foot_point(m)[::-1]) and "(y, x)" in capsys.readouterr().out

    def any_pixel(m):
        ys, xs = np.nonzero(m > 0)
        return (int(round(xs[ys == ys.max()].mean())), int(ys.max())) if ys.size else None

    assert not check.foot_point(any_pixel) and "at least 128" in capsys.readouterr().out


def test_std_from_histogram(capsys):
    def right(h):
        v = np.arange(256) / 255
        m = (h * v).sum() / h.sum()
        return m, np.sqrt((h * (v - m) ** 2).sum() / h.sum())

    def sample_std(h):
        values = np.repeat(np.arange(256), h) / 255
        return values.mean(), values.std(ddof=1)

    assert check.std_from_histogram(right)
    assert not check.std_from_histogram(sample_std) and "n - 1" in capsys.readouterr().out
    assert not check.std_from_histogram(lambda h: tuple(255 * np.array(right(h)))) and "255" in capsys.readouterr().out


def test_mask_offset(capsys):
    def right(true, stored):
        shifts = [(dy, dx) for dy in range(-3, 4) for dx in range(-3, 4)]
        score = lambda s: metrics.iou(torch.from_numpy(np.roll(stored, s, (0, 1)) / 255.0)[None, None],
                                      torch.from_numpy(true / 255.0)[None, None]).item()
        return max(shifts, key=score)

    assert check.mask_offset(right)
    assert not check.mask_offset(lambda t, s: tuple(-v for v in right(t, s))) and "opposite" in capsys.readouterr().out


def test_leak_share(capsys):
    assert check.leak_share(lambda rooms, items: sum(bg in rooms for bg, _ in items) / len(items))
    assert not check.leak_share(lambda rooms, items: sum(bg in rooms for bg, _ in items)) and "count" in capsys.readouterr().out


def test_receptive_field_answer_is_what_the_layers_measure(capsys):
    stack = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3, padding=1), torch.nn.Conv2d(4, 4, 3, padding=1),
                                torch.nn.AvgPool2d(2), torch.nn.Conv2d(4, 4, 3, padding=1),
                                torch.nn.Conv2d(4, 1, 3, padding=1))

    # The same window as the exercise's max-pool; average pooling passes a gradient to all four of
    # its pixels (max-pooling only to the largest), so the measured extent does not depend on the input.
    with torch.no_grad():
        for conv in stack:
            if isinstance(conv, torch.nn.Conv2d):
                conv.weight.abs_()  # all-positive weights: every path reaches the output pixel
    x = torch.rand(1, 3, 32, 32, requires_grad=True)
    stack(x)[0, 0, 8, 8].backward()  # one output pixel (the output is at half size)
    rows = torch.nonzero(x.grad.abs().sum((0, 1)).sum(1) > 0).flatten()
    measured = int(rows.max() - rows.min() + 1)
    assert check.receptive_field(measured) and measured == 14
    assert not check.receptive_field(10) and "adds 4" in capsys.readouterr().out
    assert not check.receptive_field(None)


def test_iou(capsys):
    assert check.iou(metrics.iou)
    assert not check.iou(lambda p, t: metrics.iou(p, t).mean()) and "per image" in capsys.readouterr().out

    def no_empty_rule(p, t):
        P, T = (p >= 0.5).flatten(1).float(), (t >= 0.5).flatten(1).float()
        return (P * T).sum(1) / ((P + T) > 0).float().sum(1)

    assert not check.iou(no_empty_rule) and "empty" in capsys.readouterr().out


def test_steps_per_run(capsys):
    assert check.steps_per_run(22_500)
    assert not check.steps_per_run(3_750) and "one epoch" in capsys.readouterr().out


def test_aligned_rmse(capsys):
    assert check.aligned_rmse(lambda p, t: metrics.aligned(metrics.rmse, p, t))
    assert not check.aligned_rmse(metrics.rmse) and "plain RMSE" in capsys.readouterr().out


def test_every_chapters_coded_solution_passes_its_check():
    import json
    import re
    from pathlib import Path

    found = 0
    for path in sorted(Path(__file__).resolve().parent.parent.glob("notebooks/*.ipynb")):
        cells = ["".join(c["source"]) for c in json.loads(path.read_text())["cells"]]
        for i, src in enumerate(cells):
            call = re.search(r"dm\.check\.(\w+)\((\w+)\)", src)
            if not call:
                continue
            solution = re.search(r"```python\n(.*?)```", cells[i + 1], re.S)
            if solution is None:  # a number to work out: checked above
                continue
            space = {"np": np, "torch": torch, "Path": Path, "os": __import__("os")}  # what the chapters import
            exec(solution.group(1), space)
            assert getattr(check, call.group(1))(space[call.group(2)]), path.name
            found += 1
    assert found >= 9


def test_an_answer_of_the_wrong_form_gets_a_hint_not_a_traceback(capsys):
    assert not check.std_from_histogram(lambda h: 0.5) and "unexpected form" in capsys.readouterr().out
    assert not check.mask_offset(lambda t, s: 0) and "unexpected form" in capsys.readouterr().out
    assert not check.leak_share(lambda rooms, items: (1, 2)) and "unexpected form" in capsys.readouterr().out


def test_write_atomically(capsys):
    import os
    import shutil
    import tempfile
    from pathlib import Path

    from depthmask_utils.storage import atomic_write_bytes

    def elsewhere(data, path):
        tmp = Path(tempfile.mkdtemp()) / "part"
        tmp.write_bytes(data)
        shutil.move(tmp, path)

    def copied(data, path):
        tmp = Path(path).with_name("part")
        tmp.write_bytes(data)
        shutil.copy(tmp, path)

    def low_level(data, path):  # os.open and os.rename are watched too
        fd = os.open(f"{path}.part", os.O_WRONLY | os.O_CREAT)
        os.write(fd, data)
        os.close(fd)
        os.rename(f"{path}.part", path)

    import builtins
    real_open = builtins.open
    assert check.write_atomically(lambda d, p: atomic_write_bytes(p, d))  # the package's own
    assert check.write_atomically(low_level)
    assert not check.write_atomically(lambda d, p: Path(p).write_bytes(d)) and "directly" in capsys.readouterr().out
    assert not check.write_atomically(elsewhere) and "another folder" in capsys.readouterr().out
    assert not check.write_atomically(copied) and "directly" in capsys.readouterr().out
    assert not check.write_atomically(lambda d, p: None) and "does not hold" in capsys.readouterr().out
    assert not check.write_atomically(lambda d, p: 1 / 0) and "ZeroDivisionError" in capsys.readouterr().out
    assert builtins.open is real_open and os.replace.__module__ == "posix"  # the watch is undone


def test_rank_batches(capsys):
    assert check.rank_batches(lambda n, r, w: list(range(r, n // w * w, w)))
    assert not check.rank_batches(lambda n, r, w: list(range(r, n, w))) and "forever" in capsys.readouterr().out
    assert not check.rank_batches(lambda n, r, w: list(range(n))) and "same batch" in capsys.readouterr().out
    assert not check.rank_batches(lambda n, r, w: list(range(r * (n // w), (r + 1) * (n // w)))) and \
        "every world-th" in capsys.readouterr().out
    assert not check.rank_batches(lambda n, r, w: [r]) and "drop only" in capsys.readouterr().out
