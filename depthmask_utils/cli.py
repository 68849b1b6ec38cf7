"""``python -m depthmask_utils <command>``: each command calls the same function a notebook calls.

Problems with input print one line, ``error: <file>: <problem>``, and exit with status 2; a
failed ``verify`` lists its problems and exits with status 1.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .config import PROFILES, get_profile
from .depth import MODES, TEACHERS
from .overlay import PLACEMENTS
from .storage import JPEG_CHROMA
from .errors import DepthmaskError


def _profile(args):
    return get_profile(args.profile)


def cmd_sample(args) -> int:
    """Render the sample world (chapter 01) into --out."""
    from .sample import make_sample_world

    summary = make_sample_world(args.out, args.n_bg, args.n_fg, args.size, args.seed, profile=args.profile)
    print(f"sample world in {args.out}: {summary['bg']}; {summary['fg']}")
    return 0


def cmd_generate(args) -> int:
    """Make the composites and masks (chapters 03-04); skipped inputs are listed on stderr."""
    from .overlay import generate

    r = generate(args.bg, args.fg, args.out, size=args.size, placements=args.placements,
                 scale=tuple(args.scale) if args.scale else None, seed=args.seed, workers=args.workers,
                 jpeg_quality=args.jpeg_quality, placement=args.placement, floor_dir=args.floor,
                 jpeg_chroma=args.jpeg_chroma, floor_teacher=args.floor_teacher, fg_per_bg=args.fg_per_bg,
                 profile=args.profile,
                 log=lambda line: print(line, file=sys.stderr if line.startswith("warning") else sys.stdout))
    for s in r.skipped:
        print(f"skipped {s['kind']} {s['file']}: {s['reason']}", file=sys.stderr)
    print(repr(r))
    return 0


def cmd_verify(args) -> int:
    """Check every member, count and mask (and depth, once labelled); exit 1 with the problems."""
    from .dataset import verify

    report = verify(args.dataset, workers=args.workers)
    for p in report.problems:
        print(p)
    print(repr(report))
    return 0 if report.ok else 1


def cmd_label_depth(args) -> int:
    """Add depth labels from a teacher (chapter 05); resumes shard by shard."""
    from .depth import label_depth

    from .pipeline import labelling_teacher

    p = _profile(args)
    teacher = args.teacher
    if teacher is None:
        teacher, why = labelling_teacher(p, args.dataset)
        print(f"teacher {teacher}: {why}")
    r = label_depth(args.dataset, teacher=teacher, mode=args.mode, batch_size=args.batch_size, device=args.device,
                    weights=args.weights, teacher_path=args.teacher_path, input_size=args.input_size,
                    overwrite=args.overwrite, profile=p.name)
    print(repr(r))
    return 0


def cmd_stats(args) -> int:
    """Exact mean and std per category and channel -> DATASET/stats.json (chapter 06)."""
    from .stats import dataset_stats

    s = dataset_stats(args.dataset, workers=args.workers)
    print(s.table().to_string())
    print(f"wrote {Path(args.dataset) / 'stats.json'}")
    return 0


def cmd_gallery(args) -> int:
    """Grids per category and per-sample strips -> DATASET/gallery/ (chapter 07)."""
    from .gallery import make_galleries

    for path in make_galleries(args.dataset, n=args.n, strips=args.strips, seed=args.seed):
        print(path)
    return 0


def _train_config(args):
    """The profile's training values with the options applied: each named option is a shortcut for
    one ``--set KEY=VALUE``, and all go through :func:`config.train_config`'s one rule."""
    from .config import train_config

    p = _profile(args)
    values = {"epochs": args.epochs, "batch_size": args.batch_size, "workers": args.workers, "device": args.device,
              "seed": args.seed, "model": args.model, "checkpoint_every": args.checkpoint_every,
              "pretrained": args.pretrained}
    if args.size:  # the final size; progressive resizing keeps its smaller steps below it
        values["sizes"] = tuple(s for s in p.train.sizes if s < args.size) + (args.size,)
    if args.refine_from:  # the refiner replaces unshuffle: the model runs on the shrunk input instead
        base = {} if args.model and args.model != p.train.model else p.train.model_options
        values["model_options"] = {**{k: v for k, v in base.items() if k != "unshuffle"}, "refine_from": args.refine_from}
    return train_config(p, args.set, **values)


def cmd_pack(args) -> int:
    """One zip of the whole dataset folder, to hand in or upload (stored, not recompressed)."""
    from .storage import pack_folder

    r = pack_folder(args.dataset, args.out)
    print(f"wrote {r['path']}: {r['files']} files, {r['bytes'] / 1e6:.1f} MB")
    return 0


def cmd_train(args) -> int:
    """Train (or resume) a run (chapter 11); options override the profile's training values."""
    from .train import train

    r = train(args.dataset, args.out, _train_config(args), progress=not args.no_progress,
              allow_random_labels=args.allow_random_labels)
    print(repr(r))
    return 0


def cmd_evaluate(args) -> int:
    """Score a run on the test groups -> RUN/metrics.json and per_image.csv (chapter 13)."""
    import json

    from .evaluate import evaluate

    m = evaluate(args.run, args.dataset, device=args.device, workers=args.workers or 0)
    print(json.dumps({"test": m["test"], "groups": m["groups"]}, indent=1))
    print(f"wrote {Path(args.run) / 'metrics.json'}")
    return 0


def cmd_predict(args) -> int:
    """Mask and depth PNGs for new images, at their own size (chapter 13)."""
    from .evaluate import predict

    written = predict(args.run, args.bg, args.fg_bg, args.out, device=args.device)
    print(f"wrote {len(written)} files to {args.out}")
    return 0


def cmd_export(args) -> int:
    """Export a run's model to ONNX and check it against PyTorch with onnxruntime."""
    from .evaluate import export_onnx

    r = export_onnx(args.run, args.out)
    print(f"wrote {r['path']} ({r['bytes'] / 1e6:.1f} MB, input {r['size']}x{r['size']}); onnxruntime vs PyTorch "
          f"max |diff|: mask {r['max_abs_diff']['mask']:.2e}, depth {r['max_abs_diff']['depth']:.2e}")
    return 0


def cmd_run(args) -> int:
    """Execute every chapter in order under a profile; executed notebooks, data and a report go to --out."""
    from .course import ChapterFailed, run_course

    print(f"running the course, profile {args.profile}, into {Path(args.out).resolve()}", flush=True)
    try:
        report = run_course(args.profile, args.out, only=args.only, log=print, fg_dir=args.fg, bg_dir=args.bg,
                            floor_dir=args.floor, **({"notebooks": Path(args.notebooks)} if args.notebooks else {}))
    except ChapterFailed as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"report: {report}")
    return 0


def cmd_refresh(args) -> int:
    """Re-run chapters in place with their sample defaults and strip run metadata (what gets committed)."""
    from .course import ChapterFailed, refresh_chapters, sync_notebooks

    sync_notebooks(write=True)
    try:
        problems = refresh_chapters(args.only, log=print)
    except ChapterFailed as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 1 if problems else 0


def cmd_colab(args) -> int:
    """Write (or with --check, compare) every chapter's Colab badge and install cell from _config.yml."""
    from .course import repository, sync_notebooks

    differ = sync_notebooks(write=not args.check)
    for name, what in differ.items():
        print(f"{name}: {', '.join(what)}" + (" differ from _config.yml" if args.check else " rewritten"))
    if args.check and differ:
        print("error: run `python -m depthmask_utils colab` to regenerate them", file=sys.stderr)
        return 1
    print(f"{'checked' if args.check else 'written'}: badges and install cells for {repository().url}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The argument parser: one sub-command per step, each with --profile."""
    ap = argparse.ArgumentParser(prog="python -m depthmask_utils", description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="command", required=True)

    def add(name, func, help_):
        sp = sub.add_parser(name, help=help_, description=help_)
        sp.add_argument("--profile", choices=list(PROFILES), default="sample",
                        help="defaults for unset options (default: sample)")
        sp.set_defaults(func=func)
        return sp

    sp = add("sample", cmd_sample, "write the bundled sample world (rooms with exact depth, people)")
    sp.add_argument("--out", required=True)
    sp.add_argument("--n-bg", type=int)
    sp.add_argument("--n-fg", type=int)
    sp.add_argument("--size", type=int, help="photo height in pixels (photos are 4:3)")
    sp.add_argument("--seed", type=int)

    sp = add("generate", cmd_generate, "make fg_bg composites and masks into a dataset folder")
    sp.add_argument("--bg", required=True, help="folder of background images")
    sp.add_argument("--fg", required=True, help="folder of foregrounds (RGBA, or on a plain backdrop)")
    sp.add_argument("--out", required=True, help="dataset folder")
    sp.add_argument("--size", type=int)
    sp.add_argument("--placements", type=int, help="per (bg, fg, flip); default: the profile's, raised for few "
                    "photos to reach its minimum dataset size")
    sp.add_argument("--fg-per-bg", type=int, metavar="K",
                    help="people in each background, in turn round all of them (default: the profile's; sample: 8; "
                         "0: every person in every background)")
    sp.add_argument("--scale", type=float, nargs=2, metavar=("LO", "HI"))
    sp.add_argument("--seed", type=int)
    sp.add_argument("--workers", type=int)
    sp.add_argument("--jpeg-quality", type=int)
    sp.add_argument("--jpeg-chroma", choices=list(JPEG_CHROMA),
                    help="444: colour at full resolution (the profiles' default); 420: half, smaller files, blurrier outlines")
    sp.add_argument("--placement", choices=list(PLACEMENTS),
                    help="floor (default): feet on the floor masks, or on estimated floors; uniform: anywhere in the frame")
    sp.add_argument("--floor", metavar="DIR", help="floor masks, one PNG per background named like it (255 = floor); "
                                                   "without them (and outside the sample world) floors are estimated")
    sp.add_argument("--floor-teacher", choices=[t for t in TEACHERS if t != "scene"],
                    help="the depth teacher whose map of each background the floor is estimated from "
                         "(default: the profile's network teacher; sample: mini)")

    sp = add("verify", cmd_verify, "check every member, count and mask of a dataset")
    sp.add_argument("dataset")
    sp.add_argument("--workers", type=int)

    sp = add("label-depth", cmd_label_depth, "add depth labels from a teacher")
    sp.add_argument("dataset")
    sp.add_argument("--teacher", choices=list(TEACHERS),
                    help="default: the profile's (sample: scene, exact; your own photos: mini; full: depth-anything-v2-small)")
    sp.add_argument("--mode", choices=list(MODES), help="default: the profile's (sample and full: bg-plus-foreground)")
    sp.add_argument("--batch-size", type=int)
    sp.add_argument("--device", help="cuda, cpu, ... (default: cuda if available)")
    sp.add_argument("--weights", choices=["pretrained", "random"], default="pretrained",
                    help="random: same architecture with random weights (noise; code-path tests and timing "
                         "only; refused with --profile full)")
    sp.add_argument("--teacher-path", help="local folder with the teacher's config.json and weights")
    sp.add_argument("--input-size", type=int, help="square side the teacher sees")
    sp.add_argument("--overwrite", action="store_true", help="relabel shards labelled by another teacher")

    sp = add("stats", cmd_stats, "exact mean/std per category and channel -> stats.json")
    sp.add_argument("dataset")
    sp.add_argument("--workers", type=int)

    sp = add("gallery", cmd_gallery, "grids per category and per-sample strips -> DATASET/gallery/")
    sp.add_argument("dataset")
    sp.add_argument("--n", type=int, default=16)
    sp.add_argument("--strips", type=int, default=4)
    sp.add_argument("--seed", type=int, default=0)

    sp = add("pack", cmd_pack, "one zip of a dataset folder, to hand in or upload")
    sp.add_argument("dataset")
    sp.add_argument("--out", required=True, help="the zip file to write")

    from .models import MODELS

    sp = add("train", cmd_train, "train the (fg_bg, bg) -> (mask, depth) model; re-running resumes")
    sp.add_argument("dataset")
    sp.add_argument("--out", required=True, help="run folder (checkpoints, history, model.pt)")
    sp.add_argument("--epochs", type=int)
    sp.add_argument("--size", type=int, help="final training side (progressive resizing below it)")
    sp.add_argument("--batch-size", type=int)
    sp.add_argument("--workers", type=int)
    sp.add_argument("--device", choices=["auto", "cpu", "cuda"])
    sp.add_argument("--seed", type=int)
    sp.add_argument("--model", choices=list(MODELS))
    sp.add_argument("--refine-from", type=int, metavar="PX",
                    help="run the model at PX and refine the mask at --size (e.g. --size 128 --refine-from 64)")
    sp.add_argument("--checkpoint-every", type=int, help="steps between checkpoints (and one at each epoch end)")
    sp.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="any training value (VALUE as JSON, else text), e.g. --set lr=0.001 --set "
                         "model_options.base=32; repeatable; recorded in RUN/config.json")
    sp.add_argument("--pretrained", action=argparse.BooleanOptionalAction,
                    help="ImageNet weights for a ResNet encoder (default: the profile's; full: on, a download)")
    sp.add_argument("--no-progress", action="store_true", help="no progress bar (logs one line per epoch)")
    sp.add_argument("--allow-random-labels", action="store_true",
                    help="train even on depth labels from a teacher with random weights (code-path tests only)")

    sp = add("evaluate", cmd_evaluate, "test metrics of a run -> RUN/metrics.json")
    sp.add_argument("run")
    sp.add_argument("dataset")
    sp.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    sp.add_argument("--workers", type=int)

    sp = add("predict", cmd_predict, "mask and depth for new images (files or folders paired by name)")
    sp.add_argument("run")
    sp.add_argument("--bg", required=True, help="background image, or folder of them")
    sp.add_argument("--fg-bg", required=True, help="composite image, or folder of them")
    sp.add_argument("--out", required=True)
    sp.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])

    sp = add("export", cmd_export, "export a run's model to ONNX, checked with onnxruntime")
    sp.add_argument("run")
    sp.add_argument("--out", required=True)

    sp = add("run", cmd_run, "execute every chapter in order (papermill); notebooks, data and report.md go to --out")
    sp.add_argument("--out", default="executed", help="folder for the executed notebooks, data and report (default: executed)")
    sp.add_argument("--only", nargs="+", metavar="NN", help="only these chapters (numbers such as 00 03, or names)")
    sp.add_argument("--fg", metavar="DIR", help="your own foregrounds (RGBA cut-outs), for every chapter that takes them")
    sp.add_argument("--bg", metavar="DIR", help="your own backgrounds")
    sp.add_argument("--floor", metavar="DIR", help="floor masks for your backgrounds (else they are estimated)")
    sp.add_argument("--notebooks", metavar="DIR", help="the chapters to run (default: the checkout's notebooks/)")

    sp = add("refresh", cmd_refresh, "re-run chapters in place with their sample defaults, as committed")
    sp.add_argument("only", nargs="*", metavar="NN", help="only these chapters (default: all)")

    sp = add("colab", cmd_colab, "write every chapter's Colab badge and install cell from _config.yml")
    sp.add_argument("--check", action="store_true", help="only compare; exit 1 if a notebook differs")
    return ap


def main(argv: list[str] | None = None) -> int:
    """Run one command; a user's mistake prints one `error:` line and returns 2, never a traceback."""
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except DepthmaskError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except ValueError as exc:  # bad option values (scale, mode, sizes)
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted: finished shards are kept; run the same command again to resume", file=sys.stderr)
        return 130
