"""The queue and drop-folder sensors, evaluated the way the daemon evaluates them."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from dagster import DagsterInstance, Definitions, build_sensor_context
from sqlalchemy import select, text

from agentforge_dagster.definitions import build_definitions
from agentforge_dagster.orchestration import sensors
from agentforge_dagster.orchestration.sensors import take_drop_folder
from agentforge_dagster.persistence.resources import BusinessStoreResource
from agentforge_dagster.persistence.schema import orders
from agentforge_dagster.persistence.store import BusinessStore
from agentforge_dagster.settings import AgentForgeSettings
from tests.conftest import make_order


def evaluate(defs: Definitions, instance: DagsterInstance, name: str, database_url: str):
    sensor = defs.resolve_sensor_def(name)
    with build_sensor_context(
        instance=instance,
        resources={"store": BusinessStoreResource(database_url=database_url)},
        definitions=defs,
    ) as context:
        return sensor(context)


def test_queue_sensor_requests_each_queued_order_under_a_stable_run_key(
    defs: Definitions, instance: DagsterInstance, store: BusinessStore, settings
) -> None:
    ids = [store.orders.submit(make_order(i)).order_id for i in range(3)]
    url = settings.storage.resolved_database_url()
    first = evaluate(defs, instance, "order_queue", url)
    assert [r.run_key for r in first] == [f"order-{i}" for i in ids]
    assert [r.partition_key for r in first] == ids
    assert set(instance.get_dynamic_partitions("orders")) == set(ids), "partitions registered"

    again = evaluate(defs, instance, "order_queue", url)  # still queued: the same keys
    assert [r.run_key for r in again] == [f"order-{i}" for i in ids]
    claims = [r for r in store.audit.audit_rows() if r["event"] == "launch_requested"]
    assert sorted(r["order_id"] for r in claims) == sorted(ids), "claimed and audited once each"


def test_skip_locked_claims_never_hand_one_order_to_two_claimers(pg_store: BusinessStore) -> None:
    ids = [pg_store.orders.submit(make_order(i)).order_id for i in range(4)]
    locked = threading.Event()
    release = threading.Event()

    def hold_first_two() -> None:
        with pg_store.engine.begin() as conn:
            conn.execute(
                select(orders.c.order_id).where(orders.c.order_id.in_(ids[:2])).with_for_update()
            )
            locked.set()
            release.wait(10)

    holder = threading.Thread(target=hold_first_two)
    holder.start()
    assert locked.wait(10)
    try:
        assert pg_store.orders.claim_for_launch(10) == ids[2:]
    finally:
        release.set()
        holder.join()
    assert pg_store.orders.claim_for_launch(10) == ids


def test_drop_folder_queues_json_and_csv_and_records_refusals(
    store: BusinessStore, instance: DagsterInstance, tmp_path: Path
) -> None:
    drop = tmp_path / "drop"
    drop.mkdir()
    good = {
        "customer": "Acme",
        "service": "blog_post",
        "brief": "Write about drop folders",
        "price": "20",
    }
    (drop / "one.json").write_text(json.dumps(good))
    (drop / "many.json").write_text(json.dumps([good, {**good, "price": "-1"}]))
    (drop / "sheet.csv").write_text(
        "customer,service,brief,price\nBeta,email_campaign,Invite them to the sale,15.50\n"
    )
    (drop / "broken.json").write_bytes(b"\xff\xfe not json")
    (drop / "notes.txt").write_text("ignored")

    counts = take_drop_folder(store, instance, drop)
    assert counts == {"files": 4, "queued": 3, "rejected": 2, "already_queued": 0}
    assert sorted(p.name for p in (drop / "done").iterdir()) == [
        "broken.json",
        "many.json",
        "one.json",
        "sheet.csv",
    ]
    assert (drop / "notes.txt").exists()
    assert store.orders.counts_by_status() == {"queued": 3}
    assert sorted(instance.get_dynamic_partitions("orders")) == sorted(store.orders.order_ids())
    rejections = [
        r["detail"]["errors"] for r in store.audit.audit_rows() if r["event"] == "order_rejected"
    ]
    assert any("price" in e[0] for e in rejections) and any("UTF-8" in e[0] for e in rejections)

    # The same file dropped again (a crash before it was moved) queues nothing twice.
    (drop / "one.json").write_text(json.dumps(good))
    assert take_drop_folder(store, instance, drop)["already_queued"] == 1
    assert store.orders.counts_by_status() == {"queued": 3}


def test_hostile_drop_files_are_set_aside_and_the_rest_still_taken(
    store: BusinessStore, instance: DagsterInstance, tmp_path: Path
) -> None:
    drop = tmp_path / "drop"
    drop.mkdir()
    good = {"customer": "Acme", "service": "blog_post", "brief": "Write about drops", "price": "9"}
    (drop / "a-dir.json").mkdir()  # a directory with an order's name
    (drop / "b-huge-price.json").write_text(
        json.dumps({**good, "price": "PRICE"}).replace('"PRICE"', "1" * 5000)
    )
    (drop / "c-deep.json").write_text("[" * 200_000 + "]" * 200_000)
    (drop / "d-dup-keys.json").write_text(json.dumps(good)[:-1] + ', "price": "900"}')
    (drop / "e-bom.csv").write_bytes(
        "customer,service,brief,price\nBom Co,blog_post,Spreadsheet export here,12.00\n".encode(
            "utf-8-sig"
        )
    )
    (drop / "f-good.json").write_text(json.dumps(good))

    counts = take_drop_folder(store, instance, drop)
    assert counts == {"files": 6, "queued": 2, "rejected": 4, "already_queued": 0}
    assert sorted(p.name for p in (drop / "rejected").iterdir()) == [
        "a-dir.json",
        "a-dir.json.reason.txt",
    ]
    assert "cannot be read" in (drop / "rejected" / "a-dir.json.reason.txt").read_text()
    assert len(list((drop / "done").iterdir())) == 5
    assert sorted(store.orders.get(o).order.customer for o in store.orders.order_ids()) == [
        "Acme",
        "Bom Co",
    ]
    errors = {
        r["detail"]["source"]: r["detail"]["errors"][0]
        for r in store.audit.audit_rows()
        if r["event"] == "order_rejected"
    }
    assert errors["drop:a-dir.json"].startswith("file: cannot be read (a folder:")
    assert errors["drop:b-huge-price.json"].startswith("price: too many digits")
    assert errors["drop:c-deep.json"].startswith("order: JSON nested too deeply")
    assert errors["drop:d-dup-keys.json"].startswith("price: given twice")


def test_items_of_a_dropped_list_keep_their_ids_whatever_they_are(
    store: BusinessStore, instance: DagsterInstance, tmp_path: Path
) -> None:
    drop = tmp_path / "drop"
    drop.mkdir()
    good = {"customer": "Acme", "service": "blog_post", "brief": "Write about drops", "price": "9"}
    content = json.dumps([json.dumps(good), "not an order", 7, None, good])
    (drop / "list.json").write_text(content)
    first = take_drop_folder(store, instance, drop)
    # The JSON-encoded string is text, not an order: it is refused, never decoded a second time.
    assert first == {"files": 1, "queued": 1, "rejected": 4, "already_queued": 0}
    ids = store.orders.order_ids()
    assert len(ids) == 1 and ids[0].startswith("drop-") and ids[0].endswith("-4")
    errors = [
        r["detail"]["errors"][0] for r in store.audit.audit_rows() if r["event"] == "order_rejected"
    ]
    assert errors[0] == "item 0: an order is a JSON object, not a string", errors

    (drop / "list.json").write_text(content)  # dropped again: nothing queued twice
    again = take_drop_folder(store, instance, drop)
    assert again == {"files": 1, "queued": 0, "rejected": 4, "already_queued": 1}
    assert store.orders.order_ids() == ids


def test_a_file_that_is_one_json_string_is_refused_not_decoded_again(
    store: BusinessStore, instance: DagsterInstance, tmp_path: Path
) -> None:
    drop = tmp_path / "drop"
    drop.mkdir()
    good = {"customer": "Acme", "service": "blog_post", "brief": "Write about drops", "price": "9"}
    (drop / "text.json").write_text(json.dumps(json.dumps(good)))
    assert take_drop_folder(store, instance, drop)["rejected"] == 1
    assert store.orders.order_ids() == []
    [refusal] = [r for r in store.audit.audit_rows() if r["event"] == "order_rejected"]
    assert refusal["detail"]["errors"] == ["item 0: an order is a JSON object, not a string"]


def test_the_drop_folder_reads_only_regular_files_inside_itself(
    store: BusinessStore, instance: DagsterInstance, tmp_path: Path
) -> None:
    """A link out (to a system file), a link in, a FIFO and a socket: refused unread, set aside."""
    import socket

    drop = tmp_path / "drop"
    drop.mkdir()
    good = {"customer": "Acme", "service": "blog_post", "brief": "Write about drops", "price": "9"}
    secret = tmp_path / "outside.json"
    secret.write_text(json.dumps({**good, "customer": "SECRET-OUTSIDE"}))
    (drop / "a-out.json").symlink_to("/etc/passwd")
    (drop / "b-out-order.json").symlink_to(secret)
    (drop / "c-real.json").write_text(json.dumps(good))
    (drop / "d-in.json").symlink_to(drop / "c-real.json")
    os.mkfifo(drop / "e-fifo.json")  # opening it for reading would block the sensor
    listener = socket.socket(socket.AF_UNIX)
    listener.bind(str(drop / "f-socket.json"))
    try:
        counts = take_drop_folder(store, instance, drop)
    finally:
        listener.close()
    assert counts == {"files": 6, "queued": 1, "rejected": 5, "already_queued": 0}
    assert [store.orders.get(o).order.customer for o in store.orders.order_ids()] == ["Acme"]
    rejected = {
        r["detail"]["source"]: r["detail"]["errors"][0]
        for r in store.audit.audit_rows()
        if r["event"] == "order_rejected"
    }
    assert "a symbolic link" in rejected["drop:a-out.json"]
    assert "a symbolic link" in rejected["drop:d-in.json"]
    assert "a FIFO" in rejected["drop:e-fifo.json"] and "a socket" in rejected["drop:f-socket.json"]
    with store.engine.connect() as conn:
        kept = " ".join(str(row) for row in conn.execute(text("select * from rejected_orders")))
    assert "root:" not in kept and "SECRET-OUTSIDE" not in kept  # nothing of a target was read
    # Set aside as they were (the links themselves), so no tick looks at them again.
    aside = drop / "rejected"
    assert (aside / "a-out.json").is_symlink() and (aside / "e-fifo.json").is_fifo()
    assert secret.exists() and Path("/etc/passwd").exists()
    assert take_drop_folder(store, instance, drop)["files"] == 0


@pytest.mark.parametrize("swapped_in", ["link out", "fifo"])
def test_a_file_swapped_between_the_look_and_the_open_is_refused_unread(
    store: BusinessStore,
    instance: DagsterInstance,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    swapped_in: str,
) -> None:
    """A regular file when looked at, a link out or a FIFO when opened: nothing read, no block."""
    drop = tmp_path / "drop"
    drop.mkdir()
    secret = tmp_path / "outside.json"
    secret.write_text(json.dumps({"customer": "SECRET-OUTSIDE", "service": "blog_post"}))
    swapped = drop / "swapped.json"
    swapped.write_text("{}")
    look = sensors._not_a_regular_file

    def look_then_swap(path: Path) -> str | None:
        kind = look(path)  # the real look, on the regular file
        if path == swapped:
            swapped.unlink()
            swapped.symlink_to(secret) if swapped_in == "link out" else os.mkfifo(swapped)
        return kind

    monkeypatch.setattr(sensors, "_not_a_regular_file", look_then_swap)
    assert take_drop_folder(store, instance, drop)["rejected"] == 1
    assert store.orders.order_ids() == []
    with store.engine.connect() as conn:
        kept = " ".join(str(row) for row in conn.execute(text("select * from rejected_orders")))
    assert "drop:swapped.json" in kept and "SECRET-OUTSIDE" not in kept
    aside = drop / "rejected" / "swapped.json"
    assert aside.is_symlink() if swapped_in == "link out" else aside.is_fifo()


def test_a_link_planted_where_the_reason_goes_is_not_written_through(
    store: BusinessStore, instance: DagsterInstance, tmp_path: Path
) -> None:
    """rejected/x.json.reason.txt already a link to a file outside: that file stays as it was."""
    drop = tmp_path / "drop"
    (drop / "rejected").mkdir(parents=True)
    victim = tmp_path / "victim.txt"
    victim.write_text("precious\n")
    (drop / "rejected" / "a-dir.json.reason.txt").symlink_to(victim)
    (drop / "a-dir.json").mkdir()
    assert take_drop_folder(store, instance, drop)["rejected"] == 1
    assert victim.read_text() == "precious\n"
    reasons = [p for p in (drop / "rejected").iterdir() if p.name.endswith(".reason.txt")]
    written = [p for p in reasons if not p.is_symlink()]
    assert len(written) == 1 and "a folder" in written[0].read_text()
    assert (drop / "rejected" / written[0].name.removesuffix(".reason.txt")).is_dir()


def test_a_drop_folder_reached_through_a_link_is_read_by_the_sensor(
    settings: AgentForgeSettings, store: BusinessStore, instance: DagsterInstance, tmp_path: Path
) -> None:
    """AGENTFORGE_DROP_DIR may itself be a link: its own files are inside it, and are taken."""
    real = tmp_path / "real-drop"
    real.mkdir()
    (tmp_path / "drop").symlink_to(real)
    good = {"customer": "Acme", "service": "blog_post", "brief": "Write about drops", "price": "9"}
    (real / "one.json").write_text(json.dumps(good))
    defs = build_definitions(
        settings.model_copy(
            update={"sensors": settings.sensors.model_copy(update={"drop_dir": tmp_path / "drop"})}
        )
    )
    taken = evaluate(defs, instance, "order_drop_folder", settings.storage.resolved_database_url())
    assert "'queued': 1" in (taken.skip_message or "")
    assert [store.orders.get(o).order.customer for o in store.orders.order_ids()] == ["Acme"]


@contextlib.contextmanager
def read_only(folder: Path) -> Iterator[None]:
    """The folder made read-only for this process: mode bits, or for root the immutable flag."""
    if os.geteuid() != 0:
        folder.chmod(0o555)
        try:
            yield
        finally:
            folder.chmod(0o755)
        return
    subprocess.run(["chattr", "+i", str(folder)], check=True)
    try:
        yield
    finally:
        subprocess.run(["chattr", "-i", str(folder)], check=True)


def test_a_read_only_drop_folder_is_named_in_the_tick_and_nothing_is_taken_twice(
    settings: AgentForgeSettings, store: BusinessStore, instance: DagsterInstance, tmp_path: Path
) -> None:
    drop = tmp_path / "drop"
    drop.mkdir()
    good = {"customer": "Acme", "service": "blog_post", "brief": "Write about drops", "price": "9"}
    (drop / "one.json").write_text(json.dumps(good))
    defs = build_definitions(
        settings.model_copy(
            update={"sensors": settings.sensors.model_copy(update={"drop_dir": drop})}
        )
    )
    with read_only(drop):
        skipped = evaluate(
            defs, instance, "order_drop_folder", settings.storage.resolved_database_url()
        )
        assert "read-only" in (skipped.skip_message or "") and str(drop) in skipped.skip_message
        assert store.orders.order_ids() == []
        assert not [r for r in store.audit.audit_rows() if r["event"] == "order_rejected"]
    taken = evaluate(defs, instance, "order_drop_folder", settings.storage.resolved_database_url())
    assert "'queued': 1" in (taken.skip_message or "")
    assert [p.name for p in (drop / "done").iterdir()] == ["one.json"]


def test_a_csv_that_cannot_be_read_as_one_is_set_aside_with_the_reason(
    store: BusinessStore, instance: DagsterInstance, tmp_path: Path
) -> None:
    drop = tmp_path / "drop"
    drop.mkdir()
    header = "customer,service,brief,price\n"
    (drop / "huge-field.csv").write_text(header + "Acme,blog_post," + "x" * 200_000 + ",9\n")
    (drop / "latin1.csv").write_bytes(header.encode() + b"Caf\xe9,blog_post,Write,9\n")
    assert take_drop_folder(store, instance, drop)["rejected"] == 2
    reasons = {p.name: p.read_text() for p in (drop / "rejected").glob("*.reason.txt")}
    assert "field larger than field limit" in reasons["huge-field.csv.reason.txt"]
    assert "not UTF-8 text (bad byte at offset 32)" in reasons["latin1.csv.reason.txt"]
    assert store.orders.order_ids() == []
