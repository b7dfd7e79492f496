"""The seed's date-walking workload for locust: `/neo` for one day at a time, walking back.

    locust -f bench/locustfile.py --headless -u 3 -r 3 -t 30s --host http://127.0.0.1:5000 \\
        [--start-date 2024-01-31] [--days 30]

The users share one walk: together they ask for start, start - 1 day, ... , start - (days - 1),
then begin again, as bench/dates.py does with several requests in flight. Each request is
recorded under the name `/neo [<replica>]`, the replica taken from the X-Served-By header, so
locust's statistics (count, failures, percentiles) come per replica with no extra metric and
the totals still count every request once. A request whose replica is unknown is `/neo [-]`.

Why a locustfile besides bench/dates.py: locust is what many people reach for to load a web
service; this lets them run the seed's workload with locust's ramp-up, web UI and CSV output.
"""

from __future__ import annotations

import argparse
import itertools
from datetime import date, timedelta
from typing import Any, cast

from locust import HttpUser, constant, events, task

_walk = itertools.count()  # shared by every user of this process


def _options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--start-date", default=date.today().isoformat(), help="first day, YYYY-MM-DD (today)"
    )
    parser.add_argument("--days", type=int, default=30, help="days to walk back before wrapping")


# EventHook.add_listener has no annotations in locust; it returns the listener unchanged.
events.init_command_line_parser.add_listener(_options)  # type: ignore[no-untyped-call]


def neo_target(day: date) -> str:
    """The feed of one day, start_date = end_date (as bench/dates.py asks)."""
    text = day.isoformat()
    return f"/neo?start_date={text}&end_date={text}"


class DateWalker(HttpUser):
    """Asks for one day's near-earth-object feed after another, going back in time."""

    wait_time = constant(0)

    def on_start(self) -> None:
        options = self.environment.parsed_options
        start = getattr(options, "start_date", None) or date.today().isoformat()
        self.first_day = date.fromisoformat(start)
        self.walk_days = max(1, int(getattr(options, "days", 30) or 30))

    @task
    def neo(self) -> None:
        day = self.first_day - timedelta(days=next(_walk) % self.walk_days)
        with self.client.get(neo_target(day), name="/neo", catch_response=True) as response:
            served = response.headers.get("X-Served-By", "-")
            # Renamed before the context manager reports the request, so stats come per replica.
            # request_meta is typed as a Mapping but is the dict the report is fired from.
            meta = cast(dict[str, Any], response.request_meta)
            meta["name"] = f"/neo [{served}]"
            if response.status_code == 200 and served != "-":
                response.success()
            else:
                response.failure(f"status {response.status_code}, served by {served}")
