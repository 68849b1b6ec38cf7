"""Run under torchrun by tests/test_distributed.py: train, then save what each process ends with.

    torchrun --standalone --nproc-per-node=2 tests/ddp_probe.py DATASET RUN CONFIG_JSON

Writes RUN/rank<r>.pt (the model's and the loss's state, the sharded validation of the final
weights) so the test can compare the processes with each other and with one process, and, as the
process exits, RUN/rank<r>.exit: whether the process group was still open then ("open"/"closed").
"""

import atexit
import json
import sys

import torch

import depthmask_utils.train as T
from depthmask_utils import distributed
from depthmask_utils.data import CompositeDataset, make_loader
from depthmask_utils.checkpoint import read_split

dataset, run, cfg = sys.argv[1], sys.argv[2], T.TrainConfig.from_dict(json.loads(sys.argv[3]))
rank, world, _ = distributed.environment()
# Registered before train makes the group, so it runs after the package's own exit handler (LIFO).
atexit.register(lambda: open(f"{run}/rank{rank}.exit", "w").write(
    "open" if torch.distributed.is_initialized() else "closed"))
kept = {}
build_model, make_criterion = T.build_model, T.make_criterion
T.build_model = lambda *a, **k: kept.setdefault("model", build_model(*a, **k))
T.make_criterion = lambda *a, **k: kept.setdefault("criterion", make_criterion(*a, **k))
T.train(dataset, run, cfg, progress=False, log=lambda *_: None)
open_after_train = torch.distributed.is_initialized()  # kept for the process: a second train uses it
T.train(dataset, run, cfg, progress=False, log=lambda *_: None)  # a finished run: returns at once, no new group
split = read_split(run)
val = T.validation_items(CompositeDataset(dataset, "val", split_spec=split).items, cfg.val_samples)
loader = make_loader(CompositeDataset(dataset, distributed.shard(val, rank, world), cfg.sizes[-1]), 64, workers=0)
torch.save({"model": kept["model"].state_dict(), "criterion": kept["criterion"].state_dict(),
            "validation": T.validate(kept["model"], loader, torch.device("cpu")), "open_after_train": open_after_train},
           f"{run}/rank{rank}.pt")
