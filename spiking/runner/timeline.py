"""The event timeline: a run is a list of events built from a task stream and a schedule.

    evaluate(before)                       accuracies b_j before any training (all tasks)
    for each task k:
        learn(k, epochs)                   the strategy's train_step over the task's batches
        rehearse(k, steps, schedule)       optional, k >= 1: `steps` extra steps on old tasks'
                                           training data, tasks drawn by the rehearsal schedule
        evaluate(k)                        row k of the accuracy matrix (full test sets); checkpoint
        unlearn(target)                    requests scheduled after task k (target: {"task": j} or
        evaluate-unlearn(target)           {"classes": [...]}) followed by their evaluation

The runner (``run.py``) executes the events in order; nothing else decides what happens when.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .rehearsal import RehearsalSchedule

KINDS = ("learn", "rehearse", "evaluate", "unlearn")


@dataclass(frozen=True)
class Event:
    kind: str                      # one of KINDS
    task: int                      # learn/rehearse: the task; evaluate: the row (-1 = before); unlearn: phase
    epochs: int = 0                # learn
    steps: int = 0                 # rehearse
    target: Any = None             # unlearn / evaluate after unlearn
    checkpoint: bool = False       # the runner checkpoints after this event

    def to_dict(self) -> dict:
        return {"kind": self.kind, "task": self.task, "epochs": self.epochs, "steps": self.steps,
                "target": self.target}


@dataclass(frozen=True)
class Schedule:
    """What happens around the tasks: epochs per task, rehearsal phases and unlearning requests."""
    epochs: int = 1
    rehearse_steps: int = 0
    rehearsal: RehearsalSchedule = field(default_factory=RehearsalSchedule)
    unlearn: tuple = ()            # ((after_task, target), ...)


def check_target(target, n_tasks: int) -> dict:
    """Validate an unlearning target: {"task": j} or {"classes": [c, ...]}."""
    if not isinstance(target, dict) or len(target) != 1 or not ({"task", "classes"} & set(target)):
        raise ValueError(f"unlearn target must be {{'task': j}} or {{'classes': [...]}}, got {target!r}")
    if "task" in target and not (isinstance(target["task"], int) and 0 <= target["task"] < n_tasks):
        raise ValueError(f"unlearn target task must be an int in 0..{n_tasks - 1}, got {target['task']!r}")
    if "classes" in target and not (isinstance(target["classes"], (list, tuple)) and target["classes"]
                                    and all(isinstance(c, int) for c in target["classes"])):
        raise ValueError(f"unlearn target classes must be a non-empty list of ints, got {target['classes']!r}")
    return target


def build_timeline(n_tasks: int, schedule: Schedule) -> list[Event]:
    """The ordered events of a run over ``n_tasks`` tasks."""
    if not isinstance(n_tasks, int) or n_tasks < 1:
        raise ValueError(f"tasks must be an int >= 1, got {n_tasks!r}")
    if not isinstance(schedule.epochs, int) or schedule.epochs < 1:
        raise ValueError(f"epochs must be an int >= 1, got {schedule.epochs!r}")
    if not isinstance(schedule.rehearse_steps, int) or schedule.rehearse_steps < 0:
        raise ValueError(f"rehearse_steps must be an int >= 0, got {schedule.rehearse_steps!r}")
    requests: dict[int, list] = {}
    for item in schedule.unlearn:
        if not (isinstance(item, (tuple, list)) and len(item) == 2):
            raise ValueError(f"unlearn requests must be (after_task, target) pairs, got {item!r}")
        after, target = item
        if not (isinstance(after, int) and 0 <= after < n_tasks):
            raise ValueError(f"unlearn after_task must be an int in 0..{n_tasks - 1}, got {after!r}")
        check_target(target, n_tasks)
        if "task" in target and target["task"] > after:
            raise ValueError(f"unlearn request after task {after} targets unseen task {target['task']}")
        requests.setdefault(after, []).append(target)
    events = [Event("evaluate", -1)]
    for k in range(n_tasks):
        events.append(Event("learn", k, epochs=schedule.epochs))
        if schedule.rehearse_steps and k >= 1:
            events.append(Event("rehearse", k, steps=schedule.rehearse_steps))
        events.append(Event("evaluate", k, checkpoint=k not in requests))
        for j, target in enumerate(requests.get(k, ())):
            last = j == len(requests[k]) - 1
            events.append(Event("unlearn", k, target=target))
            events.append(Event("evaluate", k, target=target, checkpoint=last))
    return events
