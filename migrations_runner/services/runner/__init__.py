"""The one runner of executions: lanes.

An execution is worked by up to ``batch_size`` lanes. A lane claims the next
pending target run of the execution's current phase with one conditional
statement (respecting the batch size and ``MIGRATION_MAX_PER_DATABASE`` across
all executions), applies it under a lease, records the outcome and claims the
next one in the same transaction, until the phase has nothing left. The last
lane out of a phase opens the next one (dependency skips), and the last lane
out of the last phase finishes the execution. A failure under ``halt`` skips
what is still pending; a cancel cancels it.

Lanes are hosted by django-q2 tasks (``QueueHost``: the default, any number of
``qcluster`` processes on any number of hosts share the lanes of an execution)
or by threads of the calling process (``ThreadHost``: ``--sync``, provisioning,
tests). Both satisfy ``LaneHost`` and run ``lane_work``; only spawning differs.

A lane that dies leaves its target run ``running`` with a lease that stops
being renewed; it is failed as lost ("worker lost", with what the target's
history shows it applied) by any lane that waits for a slot (the lost runs may
hold the slots it waits for) and by ``targets_recover_lost``, which also spawns
lanes again when an execution has work but no lane. A queued lane that waits
for a slot hands over to a successor task after ``MIGRATION_LANE_SECONDS``,
so it never keeps a worker (and the recovery task behind it) waiting for long.

A target whose database server cannot be reached before anything ran on it
goes back to pending, and the server is marked unreachable (in the shared
cache): lanes claim no target of that server until a probe reaches it again,
and fail its pending targets once it stayed unreachable for
``MIGRATION_FLEET_DB_WAIT`` seconds.

The modules, from the bottom up: ``control`` (the control-database retry), ``hosts`` (``LaneHost``,
``QueueHost``), ``leases``, ``counters``, ``halting`` (``on_failure`` and failure budgets), ``reachability``,
``apply`` (one claimed run), ``claims`` (claim and record), ``ahead`` (a lane's claims ahead and fingerprints
beside its targets), ``phases`` (phases and waves), ``signals`` (a waiting
lane says so), ``recovery``, ``lanes`` (``lane_work``, launch, cancel) and ``threads`` (``ThreadHost``).
"""

from migrations_runner.services.runner.control import control_retry
from migrations_runner.services.runner.counters import COUNTER_OF
from migrations_runner.services.runner.hosts import LANE_TASK, ExecutionId, LaneHost, QueueHost
from migrations_runner.services.runner.lanes import execution_cancel_now, execution_launch, lane_work
from migrations_runner.services.runner.leases import worker_name
from migrations_runner.services.runner.phases import execution_open, phase_advance
from migrations_runner.services.runner.reachability import UNREACHABLE_KEY
from migrations_runner.services.runner.recovery import runs_fail_lost, runs_fail_lost_if_any, targets_recover_lost
from migrations_runner.services.runner.threads import ThreadHost, execution_run

__all__ = [
    "COUNTER_OF",
    "LANE_TASK",
    "UNREACHABLE_KEY",
    "ExecutionId",
    "LaneHost",
    "QueueHost",
    "ThreadHost",
    "control_retry",
    "execution_cancel_now",
    "execution_launch",
    "execution_open",
    "execution_run",
    "lane_work",
    "phase_advance",
    "runs_fail_lost",
    "runs_fail_lost_if_any",
    "targets_recover_lost",
    "worker_name",
]
