"""Orders held by a runner are leases, not states.

A runner (``agentforge run`` in the embedded default, a run worker under the daemon) holds each
order it works on with a lease: the run it works in, who it is (host, PID namespace and PID), and
a moment until which the claim holds. A :class:`LeaseKeeper` thread renews it while the run goes
on, and releases it when the run ends. A runner that dies — killed, out of disk, its machine gone —
stops renewing, and once its lease has expired (or, on the same machine, once its process is
gone) the next runner or sensor tick takes the order back (:mod:`~agentforge_dagster.orchestration
.leases`): its dead run is marked failed in Dagster and the order goes the way of any failed run,
to be replayed from the step it was in.

Leases are rows of the ``orders`` table, changed in one statement each, so two runners on one
home or on many hosts never work on one order at once: the one that loses the lease skips the
order (:class:`~agentforge_dagster.domain.errors.OrderTaken`). A lease taken back is left as a
tombstone naming the lost run, so that run, should it wake up, can never claim the order again,
while a retry of it (Dagster's run retries name it as parent) can.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, and_, or_, select

from agentforge_dagster.domain.errors import OrderTaken
from agentforge_dagster.domain.limits import DEFAULT_LEASE_SECONDS
from agentforge_dagster.domain.models import utcnow
from agentforge_dagster.domain.state import OrderStatus
from agentforge_dagster.persistence import audit
from agentforge_dagster.persistence.schema import orders
from agentforge_dagster.persistence.sql import StoreConcern, as_utc

log = logging.getLogger(__name__)

# A lease taken back from a runner that stopped renewing it: ``lost:<its run id>``.
LOST = "lost:"
_HELD = (OrderStatus.QUEUED, OrderStatus.REPLAYED, OrderStatus.PROCESSING)
_WAITING = (OrderStatus.QUEUED, OrderStatus.REPLAYED)
_WRITE_ATTEMPTS = 5


def runner_identity() -> str:
    """Who this process is, as a lease names it: ``host/pid-namespace:pid``.

    The PID namespace tells two containers on one host network apart (they share its host name).
    """
    try:
        namespace = os.readlink("/proc/self/ns/pid")
    except OSError:
        namespace = "pid:[?]"
    return f"{socket.gethostname()}/{namespace}:{os.getpid()}"


def holder_is_gone(holder: str | None) -> bool:
    """True when ``holder`` is a process of this machine and PID namespace that no longer runs.

    A holder elsewhere cannot be checked from here: only its lease's expiry says it is gone.
    """
    if not holder or ":" not in holder:
        return False
    where, _, pid_text = holder.rpartition(":")
    mine = runner_identity().rpartition(":")[0]
    if where != mine or not pid_text.isdigit():
        return False
    pid = int(pid_text)
    return pid != os.getpid() and not process_alive(pid)


def process_alive(pid: int, proc: Path = Path("/proc")) -> bool:
    """Whether ``pid`` runs on this host; a zombie (exited, never reaped) is dead."""
    try:
        stat = (proc / str(pid) / "stat").read_text()
    except FileNotFoundError:
        return False
    except OSError:
        return True  # cannot tell: leave it to the lease's expiry
    return stat.rsplit(") ", 1)[1][:1] not in ("Z", "X")


@dataclass(frozen=True)
class Lease:
    """Who holds an order, for which run, until when."""

    order_id: str
    status: OrderStatus
    run_id: str | None
    holder: str | None
    until: datetime | None

    def live(self, now: datetime) -> bool:
        """Held by a running runner: not expired, not lost, and its holder not known to be gone."""
        if self.run_id is None or self.run_id.startswith(LOST) or self.until is None:
            return False
        return self.until > now and not holder_is_gone(self.holder)

    def describe(self) -> str:
        until = f" until {self.until:%H:%M:%S} UTC" if self.until is not None else ""
        return f"run {(self.run_id or '?')[:8]} of {self.holder or 'an unknown runner'}{until}"


_LEASE_COLUMNS = (
    orders.c.order_id,
    orders.c.status,
    orders.c.lease_run_id,
    orders.c.lease_holder,
    orders.c.lease_until,
)


def _lease(row: Any) -> Lease:
    return Lease(
        row.order_id,
        OrderStatus(row.status),
        row.lease_run_id,
        row.lease_holder,
        as_utc(row.lease_until),
    )


def lease_in(conn: Connection, order_id: str) -> Lease | None:
    """The order's lease, its row locked until the transaction ends (``FOR UPDATE``)."""
    row = conn.execute(
        select(*_LEASE_COLUMNS).where(orders.c.order_id == order_id).with_for_update()
    ).one_or_none()
    return _lease(row) if row is not None else None


def check_claim(
    conn: Connection,
    order_id: str,
    run_id: str,
    *,
    predecessors: frozenset[str] = frozenset(),
    seconds: float = DEFAULT_LEASE_SECONDS,
) -> Lease | None:
    """Take or renew ``run_id``'s lease on the order, in the caller's transaction, or raise.

    Raises :class:`OrderTaken` when another runner's lease is live, or the order is in processing
    for another run (its lease taken back, or never leased) that is not one of ``predecessors``
    (the runs this one retries). An order out of queued, replayed and processing holds no lease:
    it is left to the state machine, as a retried last step finds its order completed. The
    lease is written compare-and-set, so of two claimers at once (SQLite takes no row locks) one
    wins. Returns the lease it replaced; None: no such order.
    """
    for _ in range(_WRITE_ATTEMPTS):
        lease = lease_in(conn, order_id)
        if lease is None or lease.status not in _HELD:
            return lease
        now = utcnow()
        holder = lease.run_id.removeprefix(LOST) if lease.run_id else None
        own = lease.run_id == run_id
        ours = own or (holder is not None and holder in predecessors)
        if not ours and lease.live(now):
            raise OrderTaken(f"order {order_id} is held by {lease.describe()}; this run leaves it")
        if lease.status is OrderStatus.PROCESSING and not ours and holder is not None:
            raise OrderTaken(
                f"order {order_id} was taken from {lease.describe()} and is no longer this run's"
            )
        unchanged = [
            orders.c.order_id == order_id,
            orders.c.status == lease.status.value,
            _same(orders.c.lease_run_id, lease.run_id),
            _same(orders.c.lease_until, lease.until),
        ]
        written = conn.execute(
            orders.update()
            .where(*unchanged)
            .values(
                lease_run_id=run_id,
                lease_holder=runner_identity(),
                lease_until=now + timedelta(seconds=seconds),
            )
        ).rowcount
        if written != 1:
            continue  # another claimer wrote first: judge again against what it left
        if holder is not None and not own:
            audit.append(
                conn,
                "lease_taken_over",
                order_id=order_id,
                run_id=run_id,
                detail={"from_run": holder, "from_holder": lease.holder},
            )
        return lease
    raise OrderTaken(f"order {order_id}'s lease kept changing hands; this run leaves it")


def _same(column: Any, value: object) -> Any:
    return column.is_(None) if value is None else column == value


def clear_lease_values() -> dict[str, Any]:
    """The column values of an order no runner holds (it left processing)."""
    return {"lease_run_id": None, "lease_holder": None, "lease_until": None}


class LeaseStore(StoreConcern):
    """Leases on orders: taken with a claim, renewed, released, and taken back once expired."""

    def take_lease(
        self, order_id: str, run_id: str, *, seconds: float = DEFAULT_LEASE_SECONDS
    ) -> Lease | None:
        """A runner's lease on a queued or replayed order before it starts the order's run.

        Raises :class:`OrderTaken` when another runner holds it or it is not waiting for a run.
        """
        with self.begin() as conn:
            lease = lease_in(conn, order_id)
            if lease is not None and lease.status is OrderStatus.PROCESSING:
                raise OrderTaken(f"order {order_id} is in processing with {lease.describe()}")
            if lease is not None and lease.status not in _WAITING:
                raise OrderTaken(f"order {order_id} is {lease.status.value}; nothing to run")
            return check_claim(conn, order_id, run_id, seconds=seconds)

    def renew_leases(self, run_id: str, *, seconds: float = DEFAULT_LEASE_SECONDS) -> int:
        """Push back the expiry of every lease ``run_id`` holds; how many it holds."""
        with self.begin() as conn:
            return conn.execute(
                orders.update()
                .where(orders.c.lease_run_id == run_id)
                .values(lease_until=utcnow() + timedelta(seconds=seconds))
            ).rowcount

    def release_leases(self, run_id: str) -> int:
        """End ``run_id``'s leases now (its run ended): the next runner may take the orders."""
        with self.begin() as conn:
            return conn.execute(
                orders.update().where(orders.c.lease_run_id == run_id).values(lease_until=utcnow())
            ).rowcount

    def lease_of(self, order_id: str) -> Lease | None:
        with self.begin() as conn:
            return lease_in(conn, order_id)

    def expired_leases(self, limit: int = 100) -> list[Lease]:
        """Orders whose runner has stopped renewing its lease (or is gone): to be taken back."""
        now = utcnow()
        with self.begin() as conn:
            rows = conn.execute(
                select(*_LEASE_COLUMNS)
                .where(
                    orders.c.status.in_([status.value for status in _HELD]),
                    orders.c.lease_run_id.is_not(None),
                    ~orders.c.lease_run_id.startswith(LOST),
                )
                .order_by(orders.c.lease_until)
                .limit(limit * 10)
            ).all()
        return [lease for lease in map(_lease, rows) if not lease.live(now)][:limit]

    def take_back(self, lease: Lease, *, reason: str) -> bool:
        """Mark an expired lease lost, once: True for the one caller that did (it settles the
        order); False when the runner renewed it or another caller took it back first."""
        now = utcnow()
        assert lease.run_id is not None
        expired = or_(orders.c.lease_until.is_(None), orders.c.lease_until <= now)
        if holder_is_gone(lease.holder):
            expired = or_(expired, orders.c.lease_holder == lease.holder)
        with self.begin() as conn:
            taken = conn.execute(
                orders.update()
                .where(
                    and_(
                        orders.c.order_id == lease.order_id,
                        orders.c.lease_run_id == lease.run_id,
                        expired,
                    )
                )
                .values(lease_run_id=f"{LOST}{lease.run_id}"[:80], lease_until=None)
            ).rowcount
            if taken == 1:
                audit.append(
                    conn,
                    "lease_expired",
                    order_id=lease.order_id,
                    run_id=lease.run_id,
                    detail={"holder": lease.holder, "status": lease.status.value, "reason": reason},
                )
        return taken == 1


class LeaseKeeper:
    """Renews a run's leases every third of their length, in a thread, until stopped.

    Stopping releases them (the run is over). A renewal that fails (the database away, the disk
    full) is logged and tried again next time; if none succeeds before the lease runs out, the
    order is taken back, which is what a runner that cannot write should come to.
    """

    def __init__(
        self, store: LeaseStore, run_id: str, *, seconds: float = DEFAULT_LEASE_SECONDS
    ) -> None:
        self.store = store
        self.run_id = run_id
        self.seconds = seconds
        self._stop = threading.Event()
        self._thread = threading.Thread(
            target=self._renew, name=f"lease-keeper-{run_id[:8]}", daemon=True
        )

    def __enter__(self) -> LeaseKeeper:
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self.stop()

    def start(self) -> None:
        self._thread.start()

    def stop(self, *, release: bool = True) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=10)
        if release:
            try:
                self.store.release_leases(self.run_id)
            except Exception as exc:  # the lease then expires by itself
                log.warning("could not release the leases of run %s: %s", self.run_id, exc)

    def _renew(self) -> None:
        while not self._stop.wait(self.seconds / 3):
            try:
                self.store.renew_leases(self.run_id, seconds=self.seconds)
            except Exception as exc:
                log.warning("could not renew the leases of run %s: %s", self.run_id, exc)
