"""The replica's dataset: a small generated pool shipped in replica/data/, and what dates derive.

No machine here reaches NASA, yet the demo's clients walk through dates and expect NASA-shaped
answers. Shipping every answer (about 11,500 APOD days, 110,000 days of asteroid approaches) would
take megabytes, so only a pool is shipped: 2000 near-earth objects in neo.json.gz, the word lists
of the picture-of-the-day texts in apod.json.gz. A date's answer is a pure function of the pool and
the date (a random.Random seeded with both), so every replica, on every run, answers a date alike.

    python -m replica.data --write   regenerate replica/data/*.json.gz (byte-identical every time)
    python -m replica.data --check   exit 1 if the shipped files differ from the generator's output
"""

from __future__ import annotations

import argparse
import gzip
import json
import random
import sys
from collections.abc import Sequence
from datetime import date
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any, Final

__all__ = [
    "APOD_FILE",
    "DATA_DIR",
    "NEO_FILE",
    "Dataset",
    "DatasetError",
    "generate",
    "load",
    "main",
]

FORMAT: Final = 1
NEO_FILE: Final = "neo.json.gz"
APOD_FILE: Final = "apod.json.gz"
DATA_DIR: Final = Path(__file__).with_name("data")

NEO_SEED: Final = 20150907
APOD_SEED: Final = 19950616
POOL_SIZE: Final = 2000
NEO_FIRST: Final = date(1900, 1, 1)  # NeoWs' close-approach tables span 1900..2200
NEO_LAST: Final = date(2200, 12, 31)
APOD_FIRST: Final = date(1995, 6, 16)  # the first Astronomy Picture of the Day
APOD_LAST: Final = date(2026, 12, 31)  # fixed, so that "today" is the same on every run
APPROACHES_PER_DAY: Final = (3, 12)

_GENERATOR: Final = "python -m replica.data --write"
_NEO_FIELDS: Final = ("id", "name", "absolute_magnitude_h", "hazardous", "sentry", "speed_km_s")
_HALF_MONTHS: Final = "ABCDEFGHJKLMNOPQRSTUVWXY"  # minor-planet designations skip I and Z
_ORDER_LETTERS: Final = "ABCDEFGHJKLMNOPQRSTUVWXYZ"  # and I
_MONTH_ABBR: Final = (
    "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
)
_EPOCH_ORDINAL: Final = date(1970, 1, 1).toordinal()
_AU_KM: Final = 149_597_870.7
_LUNAR_KM: Final = 384_400.0
_MILE_KM: Final = 1.609344
_FOOT_M: Final = 0.3048
_VIDEO_ALPHABET: Final = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"


class DatasetError(Exception):
    """The shipped dataset is missing or not the format this code reads."""


# ---------------------------------------------------------------------------------------------
# generation (runs only under `--write` / `--check` and in the determinism test)


def generate() -> dict[str, bytes]:
    """Every shipped file's exact bytes: gzip with mtime 0 and compact, ordered JSON, so a
    regeneration is byte-identical and a diff of the repository shows real changes only."""
    return {NEO_FILE: _pack(_neo_document()), APOD_FILE: _pack(_apod_document())}


def _pack(document: object) -> bytes:
    text = json.dumps(document, separators=(",", ":"), ensure_ascii=True)
    return gzip.compress(text.encode("ascii"), compresslevel=9, mtime=0)


def _designation(rng: random.Random) -> str:
    year = rng.randint(1950, 2025)
    half = rng.choice(_HALF_MONTHS)
    order = rng.choice(_ORDER_LETTERS)
    cycle = rng.choice((0, 0, rng.randint(1, 9), rng.randint(10, 99), rng.randint(100, 400)))
    return f"{year} {half}{order}{cycle or ''}"


def _neo_document() -> dict[str, Any]:
    rng = random.Random(NEO_SEED)
    seen: set[str] = set()
    objects: list[list[object]] = []
    while len(objects) < POOL_SIZE:
        designation = _designation(rng)
        if rng.random() < 0.55:  # numbered asteroids: SPK-ID 2000000 + number
            number = rng.randint(2_000, 620_000)
            oid = str(2_000_000 + number)
            name = f"{number} ({designation})"
        else:
            low, high = (3_000_000, 3_999_999) if rng.random() < 0.7 else (54_000_000, 54_499_999)
            oid = str(rng.randint(low, high))
            name = f"({designation})"
        h = round(rng.triangular(15.0, 31.0, 24.5), 2)
        hazardous = int(h <= 22.0 and rng.random() < 0.35)
        sentry = int(rng.random() < 0.015)
        speed = round(rng.uniform(2.5, 32.0), 3)
        if oid in seen or designation in seen:
            continue
        seen.update((oid, designation))
        objects.append([oid, name, h, hazardous, sentry, speed])
    return {
        "format": FORMAT,
        "generator": _GENERATOR,
        "seed": NEO_SEED,
        "first_date": NEO_FIRST.isoformat(),
        "last_date": NEO_LAST.isoformat(),
        "fields": list(_NEO_FIELDS),
        "objects": objects,
    }


def _apod_document() -> dict[str, Any]:
    from replica import _corpus as c  # the generator's input only; replicas read the shipped file

    rng = random.Random(APOD_SEED)
    photographers: list[str] = []
    while len(photographers) < 160:
        name = f"{rng.choice(c.FIRST_NAMES)} {rng.choice(c.LAST_NAMES)}"
        if rng.random() < 0.12:
            name += f" & {rng.choice(c.FIRST_NAMES)} {rng.choice(c.LAST_NAMES)}"
        if name not in photographers:
            photographers.append(name)
    return {
        "format": FORMAT,
        "generator": _GENERATOR,
        "seed": APOD_SEED,
        "first_date": APOD_FIRST.isoformat(),
        "last_date": APOD_LAST.isoformat(),
        "objects": c.OBJECTS,
        "kind_plurals": c.KIND_PLURALS,
        "adjectives": c.ADJECTIVES,
        "places": c.PLACES,
        "instruments": c.INSTRUMENTS,
        "lights": c.LIGHTS,
        "titles": c.TITLES,
        "sentences": c.SENTENCES,
        "months": c.MONTHS,
        "photographers": photographers,
    }


# ---------------------------------------------------------------------------------------------
# loading and per-date derivation (what a running replica uses)


def _diameters(h: float) -> dict[str, dict[str, float]]:
    """NeoWs' estimate: D = 1329 km / sqrt(albedo) * 10^(-H/5), albedo 0.25 (min) to 0.05 (max)."""
    scale = 1329.0 * 10.0 ** (-h / 5.0)
    km_min, km_max = scale / 0.5, scale / 0.05**0.5
    out: dict[str, dict[str, float]] = {}
    for unit, factor in (
        ("kilometers", 1.0),
        ("meters", 1000.0),
        ("miles", 1.0 / _MILE_KM),
        ("feet", 1000.0 / _FOOT_M),
    ):
        out[unit] = {
            "estimated_diameter_min": round(km_min * factor, 10),
            "estimated_diameter_max": round(km_max * factor, 10),
        }
    return out


def _capitalized(text: str) -> str:
    return text[:1].upper() + text[1:]


class Dataset:
    """The loaded pool plus memoized per-date answers.

    The per-date results are cached and shared between callers: treat them as read-only.
    """

    __slots__ = (
        "_apod_by_scope",
        "_apod_seed",
        "_neo_seed",
        "_pool",
        "_words",
        "apod",
        "apod_first",
        "apod_last",
        "neo_day",
        "neo_first",
        "neo_last",
    )

    def __init__(self, neo: Any, apod: Any) -> None:
        try:
            if neo["format"] != FORMAT or apod["format"] != FORMAT:
                raise DatasetError(
                    f"dataset format {neo['format']}/{apod['format']}, this code reads {FORMAT}: "
                    f"run `{_GENERATOR}`"
                )
            self._neo_seed: int = int(neo["seed"])
            self.neo_first = date.fromisoformat(neo["first_date"])
            self.neo_last = date.fromisoformat(neo["last_date"])
            self._pool: list[tuple[str, str, float, bool, bool, float]] = [
                (str(i), str(n), float(h), bool(p), bool(s), float(v))
                for i, n, h, p, s, v in neo["objects"]
            ]
            self._apod_seed: int = int(apod["seed"])
            self.apod_first = date.fromisoformat(apod["first_date"])
            self.apod_last = date.fromisoformat(apod["last_date"])
            self._words: dict[str, Any] = dict(apod)
            by_scope: dict[str, tuple[list[Any], list[Any], list[str], list[str]]] = {}
            for scope in "dsk":
                by_scope[scope] = (
                    [o for o in apod["objects"] if o[3] == scope],
                    [i for i in apod["instruments"] if scope in i[2]],
                    [t for s, t in apod["titles"] if scope in s],
                    [t for s, t in apod["sentences"] if scope in s],
                )
            self._apod_by_scope = by_scope
        except (KeyError, TypeError, ValueError) as exc:
            raise DatasetError(f"dataset is malformed ({exc!r}): run `{_GENERATOR}`") from exc
        if not self._pool or any(not any(lists) for lists in by_scope.values()):
            raise DatasetError(f"dataset is empty: run `{_GENERATOR}`")
        self.neo_day = lru_cache(maxsize=4096)(self._neo_day)
        self.apod = lru_cache(maxsize=4096)(self._apod)

    def _neo_day(self, day: date) -> list[dict[str, Any]]:
        """The objects that pass Earth on `day`, shaped like one day of the NeoWs feed."""
        rng = random.Random(f"neo/{self._neo_seed}/{day.isoformat()}")
        count = rng.randint(*APPROACHES_PER_DAY)
        iso = day.isoformat()
        day_ms = (day.toordinal() - _EPOCH_ORDINAL) * 86_400_000
        prefix = f"{day.year:04d}-{_MONTH_ABBR[day.month - 1]}-{day.day:02d}"
        objects: list[dict[str, Any]] = []
        for index in rng.sample(range(len(self._pool)), count):
            oid, name, h, hazardous, sentry, speed = self._pool[index]
            minute = rng.randrange(1440)
            au = rng.uniform(0.002, 0.05) if hazardous else rng.uniform(0.0005, 0.5)
            km_s = speed * rng.uniform(0.85, 1.2)
            km = au * _AU_KM
            approach = {
                "close_approach_date": iso,
                "close_approach_date_full": f"{prefix} {minute // 60:02d}:{minute % 60:02d}",
                "epoch_date_close_approach": day_ms + minute * 60_000,
                "relative_velocity": {
                    "kilometers_per_second": f"{km_s:.10f}",
                    "kilometers_per_hour": f"{km_s * 3600.0:.10f}",
                    "miles_per_hour": f"{km_s * 3600.0 / _MILE_KM:.10f}",
                },
                "miss_distance": {
                    "astronomical": f"{au:.10f}",
                    "lunar": f"{km / _LUNAR_KM:.10f}",
                    "kilometers": f"{km:.10f}",
                    "miles": f"{km / _MILE_KM:.10f}",
                },
                "orbiting_body": "Earth",
            }
            objects.append(
                {
                    "id": oid,
                    "neo_reference_id": oid,
                    "name": name,
                    "nasa_jpl_url": f"https://ssd.jpl.nasa.gov/tools/sbdb_lookup.html#/?sstr={oid}",
                    "absolute_magnitude_h": h,
                    "estimated_diameter": _diameters(h),
                    "is_potentially_hazardous_asteroid": hazardous,
                    "close_approach_data": [approach],
                    "is_sentry_object": sentry,
                }
            )
        return objects

    def _apod(self, day: date) -> dict[str, str]:
        """The picture of `day`, keys in NASA's (alphabetical) order.

        Every random draw happens whatever the draws before it chose, so that one template edit
        does not reshuffle every other field of every date.
        """
        w = self._words
        rng = random.Random(f"apod/{self._apod_seed}/{day.isoformat()}")
        scope = rng.choice("ddddddssssskkk")  # APOD leans to the deep sky
        objects, instruments, titles, sentences = self._apod_by_scope[scope]
        title_name, name, kind, _, constellation, slug, distance = rng.choice(objects)
        i_title, i_sentence, _, amateur = rng.choice(instruments)
        adjective, adjective2 = rng.sample(w["adjectives"], 2)
        p_title, p_sentence = rng.choice(w["places"])
        fields = {
            "T": title_name,
            "A": adjective.capitalize(),
            "A2": adjective2.capitalize(),
            "P": p_title,
            "C": constellation,
            "I": i_title,
            "L": rng.choice(w["lights"]),
            "o": name,
            "O": _capitalized(name),
            "k": kind,
            "ks": w["kind_plurals"].get(kind, kind + "s"),
            "a": adjective,
            "a2": adjective2,
            "c": constellation,
            "p": p_sentence,
            "i": i_sentence,
            "d": f"{distance:,}",
            "s": str(rng.randint(2, 150)),
            "h": str(rng.randint(3, 40)),
            "y": str(rng.randint(max(1990, day.year - 6), day.year)),
            "m": rng.choice(w["months"]),
            "e": rng.choice(("Northern", "Southern")),
        }
        title = rng.choice(titles).format(**fields)
        picked = rng.sample(sentences, min(rng.randint(4, 7), len(sentences)))
        picked.sort(key=lambda s: not s.endswith("?"))  # a question opens the text, as on APOD
        explanation = " ".join(s.format(**fields) for s in picked)
        video = rng.random() < 0.07
        video_id = "".join(rng.choice(_VIDEO_ALPHABET) for _ in range(11))
        photographer = rng.choice(w["photographers"])
        credited = amateur or rng.random() < 0.15
        entry: dict[str, str] = {}
        if credited:
            entry["copyright"] = photographer
        entry["date"] = day.isoformat()
        entry["explanation"] = explanation
        if video:
            url = f"https://www.youtube.com/embed/{video_id}?rel=0"
        else:
            tag_words = i_title.split()
            if tag_words[0] in ("a", "the"):
                del tag_words[0]
            tag = photographer.split()[1] if credited else "".join(tag_words)
            folder = f"{day.year % 100:02d}{day.month:02d}"
            base = f"https://apod.nasa.gov/apod/image/{folder}/{slug}_{tag}"
            entry["hdurl"] = f"{base}.jpg"
            url = f"{base}_1024.jpg"
        entry["media_type"] = "video" if video else "image"
        entry["service_version"] = "v1"
        entry["title"] = title
        entry["url"] = url
        return entry


def _read(directory: Path | None, filename: str) -> Any:
    try:
        if directory is None:
            blob = (resources.files("replica") / "data" / filename).read_bytes()
        else:
            blob = (directory / filename).read_bytes()
        return json.loads(gzip.decompress(blob))
    except FileNotFoundError as exc:
        raise DatasetError(f"{filename} is missing: run `{_GENERATOR}`") from exc
    except (OSError, EOFError, ValueError) as exc:
        raise DatasetError(f"{filename} is unreadable ({exc}): run `{_GENERATOR}`") from exc


def load(directory: Path | None = None) -> Dataset:
    """The shipped dataset (package data), or the one in `directory`; a few milliseconds."""
    return Dataset(_read(directory, NEO_FILE), _read(directory, APOD_FILE))


# ---------------------------------------------------------------------------------------------
# command line


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m replica.data",
        description="Generate the replica's shipped dataset (deterministic: same bytes every run).",
    )
    action = parser.add_mutually_exclusive_group(required=True)
    action.add_argument("--write", action="store_true", help="write the files")
    action.add_argument("--check", action="store_true", help="exit 1 if the files are stale")
    parser.add_argument(
        "--dir", type=Path, default=DATA_DIR, help=f"where the files go (default {DATA_DIR})"
    )
    args = parser.parse_args(argv)
    directory: Path = args.dir
    stale = 0
    for filename, blob in generate().items():
        path = directory / filename
        if args.write:
            directory.mkdir(parents=True, exist_ok=True)
            path.write_bytes(blob)
            print(f"wrote {path} ({len(blob)} bytes)")
        elif not path.is_file() or path.read_bytes() != blob:
            print(f"{path} differs from the generator's output: run `{_GENERATOR}`",
                  file=sys.stderr)
            stale += 1
    return 1 if stale else 0


if __name__ == "__main__":
    sys.exit(main())
