from depthmask_utils.parallel import run_tasks

_STATE = {}


def _init(offset):
    _STATE["offset"] = offset


def _work(x):
    return x * x + _STATE["offset"]


def test_serial_and_parallel_agree_and_run_the_initializer():
    tasks = list(range(20))
    serial = list(run_tasks(_work, tasks, workers=1, initializer=_init, initargs=(3,)))
    parallel = list(run_tasks(_work, tasks, workers=2, initializer=_init, initargs=(3,)))
    assert serial == parallel == [x * x + 3 for x in tasks]
    unordered = run_tasks(_work, tasks, workers=2, initializer=_init, initargs=(3,), ordered=False)
    assert sorted(unordered) == serial
    assert list(run_tasks(_work, [], workers=2)) == []
