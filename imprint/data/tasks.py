"""Task splits: which classes of a dataset form one imprinting task (as in the IMPRINT paper)."""
from __future__ import annotations

from collections.abc import Callable, Sequence

from imprint.core.errors import UserError
from imprint.core.settings import Registry

TASK_SPLITS: Registry[Callable[[int], list[int]]] = Registry("task split")


@TASK_SPLITS.register("all")
def all_classes(n_classes: int) -> list[int]:
    """Every class of the dataset."""
    return list(range(n_classes))


@TASK_SPLITS.register("even")
def even_classes(n_classes: int) -> list[int]:
    """Classes 0, 2, 4, ... (by index in the dataset's class order)."""
    return list(range(0, n_classes, 2))


@TASK_SPLITS.register("odd")
def odd_classes(n_classes: int) -> list[int]:
    """Classes 1, 3, 5, ..."""
    return list(range(1, n_classes, 2))


@TASK_SPLITS.register("first3")
def first_three_classes(n_classes: int) -> list[int]:
    """Classes 0, 1 and 2."""
    return list(range(min(3, n_classes)))


TaskSpec = str | tuple[int | str, ...]


def task_name(task: TaskSpec) -> str:
    """A short printable name: the split's name, or the listed classes joined by '+'."""
    return task if isinstance(task, str) else "+".join(map(str, task))


def resolve_task(task: TaskSpec, class_names: Sequence[str], dataset: str) -> list[int]:
    """Class indices of `task` in a dataset; a listed class is an index or a class name."""
    if isinstance(task, str):
        chosen = TASK_SPLITS.get(task)(len(class_names))
    else:
        chosen = []
        for item in task:
            if isinstance(item, int):
                if not 0 <= item < len(class_names):
                    raise UserError(f"task class index {item} is out of range for {dataset} "
                                     f"({len(class_names)} classes, 0..{len(class_names) - 1})")
                chosen.append(item)
            elif item in class_names:
                chosen.append(list(class_names).index(item))
            else:
                raise UserError(f"task class {item!r} is not a class of {dataset}; "
                                 f"valid: {', '.join(class_names)}")
    if len(chosen) < 2:
        raise UserError(f"task {task_name(task)!r} selects {len(chosen)} class(es) of {dataset}; a task needs >= 2")
    return chosen
