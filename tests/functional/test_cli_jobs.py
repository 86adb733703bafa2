"""`qprserver jobs` through the real CLI: times without a zone, last runs of every job."""

from __future__ import annotations

from tests.functional.conftest import Instance


def test_a_time_without_zone_is_taken_in_the_configured_time_zone(instance: Instance) -> None:
    # 23:30 in Berlin is still the 29th; read as UTC it would be the 30th.
    data = instance.json("jobs", "run", "retention", "--at", "2026-11-29T23:30", "--dry-run")
    assert data["at"] == "2026-11-29T23:30:00+01:00"
    assert data["period"] == "2026-11-29"
    summer = instance.json("jobs", "run", "retention", "--at", "2026-07-01T02:00", "--dry-run")
    assert summer["at"] == "2026-07-01T02:00:00+02:00"


def test_a_time_with_an_offset_keeps_it(instance: Instance) -> None:
    data = instance.json("jobs", "run", "retention", "--at", "2026-11-29T23:30+00:00", "--dry-run")
    assert data["at"] == "2026-11-29T23:30:00+00:00" and data["period"] == "2026-11-30"


def test_a_dry_run_of_a_job_that_offers_none_is_refused_and_runs_nothing(
    instance: Instance,
) -> None:
    result = instance.run("jobs", "run", "sweep", "--dry-run")
    assert result.returncode == 1
    assert "job 'sweep' offers no dry run; jobs with --dry-run: retention" in result.stderr
    rows = {row["name"]: row for row in instance.json("jobs", "list")}
    assert rows["sweep"]["last_finished"] is None  # refused before it ran


def test_jobs_list_says_which_jobs_offer_a_dry_run(instance: Instance) -> None:
    offered = {row["name"]: row["dry_run"] for row in instance.json("jobs", "list")}
    assert offered["retention"] is True
    assert offered["sweep"] is False and offered["bundles"] is False


def test_an_unreadable_time_is_refused_naming_it(instance: Instance) -> None:
    result = instance.run("jobs", "run", "retention", "--at", "morgen")
    assert result.returncode == 1 and "--at 'morgen' is no ISO-8601 time" in result.stderr


def test_jobs_list_shows_the_last_run_of_interval_jobs_too(instance: Instance) -> None:
    for name in ("mail-send", "sweep", "mail-digest", "retention"):
        instance.ok("jobs", "run", name)
    instance.ok("jobs", "run", "mail-send")  # a second run updates the one it shows
    rows = {row["name"]: row for row in instance.json("jobs", "list")}
    for name in ("mail-send", "sweep", "mail-digest", "retention"):
        assert rows[name]["last_status"] == "done", rows[name]
        assert rows[name]["last_finished"] is not None
    assert "error" not in rows["mail-send"]["last_result"]
    assert rows["bundles"]["last_finished"] is None  # never ran


def test_jobs_list_json_has_one_row_per_job_and_an_unknown_job_is_refused(
    instance: Instance,
) -> None:
    rows = instance.json("jobs", "list")
    assert all(
        set(row)
        >= {
            "name",
            "description",
            "schedule",
            "next_run",
            "last_period",
            "last_status",
            "last_finished",
            "last_result",
        }
        for row in rows
    )
    names = sorted(row["name"] for row in rows)
    assert {"bundles", "mail-send", "retention", "sweep"} <= set(names)
    assert "retention" in instance.ok("jobs", "list")
    ran = instance.json("jobs", "run", "sweep")
    assert set(ran) >= {"job", "at", "period", "ran", "result"} and ran["ran"] is True
    assert instance.fails("jobs", "run", "cleanup") == (
        f"Error: unknown job 'cleanup'; jobs: {', '.join(names)}"
    )
