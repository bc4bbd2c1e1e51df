#!/usr/bin/env python3
"""Writes Nexmark-shaped events as JSON Lines, for testing the Spark side without the Rust harness.

The real benchmark reads the files that `cargo bench --bench nexmark` writes from the Rust
`nexmark` crate's generator. This script writes the same layout and the same shape, so
`nexmark_spark.py` can be developed and tried before (or without) the harness:

    <events dir>/person/part-00000.json
    <events dir>/auction/part-00000.json
    <events dir>/bid/part-00000.json

It follows the default Nexmark configuration in spirit, not bit for bit: 10,000 events per
second of event time, 1 person : 3 auctions : 46 bids in every 50 events, ids starting at
1000, half the bids on "hot" auctions and three quarters from "hot" bidders, prices
10^(6u) * 100 cents, auctions that expire within ~333 ms, and half the bids from the four
hot channels whose urls carry no `channel_id`. Sellers are earlier persons and bids name
auctions that already exist. The output is deterministic for a given seed.

Usage: nexmark_fake_events.py EVENTS_DIR [--events N] [--seed S]
"""

import argparse
import os
import random

EVENTS_PER_SECOND = 10_000
PROPORTION_DENOMINATOR = 50  # 1 person + 3 auctions + 46 bids
FIRST_PERSON_ID = 1000
FIRST_AUCTION_ID = 1000
FIRST_CATEGORY_ID = 10
CATEGORY_COUNT = 5
ACTIVE_PEOPLE = 1000
IN_FLIGHT_AUCTIONS = 100
HOT_RATIO_2 = 100  # hot ids are multiples of this
CHANNEL_COUNT = 10_000
# 2026-01-01T00:00:00Z, so hour-of-day queries (q14) see a fixed clock.
BASE_TIME_MS = 1_767_225_600_000
# Event time one auction stays open at most: twice the time it takes to create
# IN_FLIGHT_AUCTIONS auctions (as the Nexmark generator does).
AUCTION_HORIZON_MS = IN_FLIGHT_AUCTIONS * PROPORTION_DENOMINATOR // 3 * 1000 // EVENTS_PER_SECOND

US_STATES = ["az", "ca", "id", "or", "wa", "wy"]
US_CITIES = ["phoenix", "los angeles", "san francisco", "boise", "portland", "bend",
             "redmond", "seattle", "kent", "cheyenne"]
FIRST_NAMES = ["peter", "paul", "luke", "john", "saul", "vicky", "kate", "julie", "sarah",
               "deiter", "walter"]
LAST_NAMES = ["shultz", "abrams", "spencer", "white", "bartels", "walton", "smith", "jones",
              "noris"]
HOT_CHANNELS = ["Google", "Facebook", "Baidu", "Apple"]


class LetterPool:
    """Cheap random lowercase strings: slices of one long random string at random offsets."""

    def __init__(self, rng: random.Random, size_chars: int = 1 << 20):
        self.rng = rng
        self.text = "".join(rng.choices("abcdefghijklmnopqrstuvwxyz", k=size_chars))

    def take(self, length_chars: int) -> str:
        start = self.rng.randrange(len(self.text) - length_chars)
        return self.text[start:start + length_chars]

    def extra(self, current_bytes: int, average_bytes: int) -> str:
        """Padding that brings an event to `average_bytes` on average (the generator's `extra`)."""
        if current_bytes > average_bytes:
            return ""
        wanted = average_bytes - current_bytes
        delta = (wanted + 2) // 5
        return self.take(wanted - delta + (self.rng.randrange(2 * delta) if delta else 0))


def base_url(rng: random.Random) -> str:
    parts = []
    for _ in range(3):
        parts.append("".join("_" if rng.randrange(13) == 0 else chr(rng.randrange(97, 123))
                             for _ in range(rng.randrange(3, 5))))
    return "https://www.nexmark.com/{}/{}/{}/item.htm?query=1".format(*parts)


def channel_table(rng: random.Random) -> list[tuple[str, str]]:
    """The 10,000 ordinary channels: 9 in 10 carry a `channel_id` in their url."""
    table = []
    for index in range(CHANNEL_COUNT):
        url = base_url(rng)
        if rng.randrange(10) > 0:
            url += f"&channel_id={index * 7919 % 1_000_003}"
        table.append((f"channel-{index}", url))
    return table


def price(rng: random.Random) -> int:
    return round(10.0 ** (rng.random() * 6.0) * 100.0)


def write_events(events_dir: str, event_count: int, seed: int) -> dict[str, int]:
    """Writes `event_count` events under `events_dir`; returns the count per event type."""
    rng = random.Random(seed)
    letters = LetterPool(rng)
    channels = channel_table(rng)
    hot_urls = [base_url(rng) for _ in HOT_CHANNELS]
    files = {}
    for kind in ("person", "auction", "bid"):
        os.makedirs(os.path.join(events_dir, kind), exist_ok=True)
        files[kind] = open(os.path.join(events_dir, kind, "part-00000.json"), "w")
    counts = {"person": 0, "auction": 0, "bid": 0}
    persons = 0  # persons written so far; ids are FIRST_PERSON_ID + 0..persons-1
    auctions = 0
    for event_number in range(event_count):
        time_ms = BASE_TIME_MS + event_number * 1000 // EVENTS_PER_SECOND
        slot = event_number % PROPORTION_DENOMINATOR
        if slot == 0:
            name = f"{rng.choice(FIRST_NAMES)} {rng.choice(LAST_NAMES)}"
            email = f"{letters.take(7)}@{letters.take(5)}.com"
            card = " ".join(f"{rng.randrange(10000):04}" for _ in range(4))
            city, state = rng.choice(US_CITIES), rng.choice(US_STATES)
            extra = letters.extra(8 + len(name) + len(email) + len(card) + len(city) + 2, 200)
            files["person"].write(
                f'{{"id":{FIRST_PERSON_ID + persons},"name":"{name}","email_address":"{email}",'
                f'"credit_card":"{card}","city":"{city}","state":"{state}",'
                f'"date_time":{time_ms},"extra":"{extra}"}}\n')
            persons += 1
        elif slot <= 3:
            if rng.randrange(4) > 0:
                seller = (persons - 1) // HOT_RATIO_2 * HOT_RATIO_2
            else:
                seller = rng.randrange(max(0, persons - ACTIVE_PEOPLE), persons)
            initial_bid = price(rng)
            expires = time_ms + 1 + rng.randrange(2 * AUCTION_HORIZON_MS)
            files["auction"].write(
                f'{{"id":{FIRST_AUCTION_ID + auctions},"item_name":"{letters.take(20)}",'
                f'"description":"{letters.take(100)}","initial_bid":{initial_bid},'
                f'"reserve":{initial_bid + price(rng)},"date_time":{time_ms},'
                f'"expires":{expires},"seller":{FIRST_PERSON_ID + seller},'
                f'"category":{FIRST_CATEGORY_ID + rng.randrange(CATEGORY_COUNT)},'
                f'"extra":"{letters.extra(168, 500)}"}}\n')
            auctions += 1
        else:
            if rng.randrange(2) > 0:
                auction = (auctions - 1) // HOT_RATIO_2 * HOT_RATIO_2
            else:
                auction = rng.randrange(max(0, auctions - IN_FLIGHT_AUCTIONS), auctions)
            if rng.randrange(4) > 0:
                bidder = min((persons - 1) // HOT_RATIO_2 * HOT_RATIO_2 + 1, persons - 1)
            else:
                bidder = rng.randrange(max(0, persons - ACTIVE_PEOPLE), persons)
            if rng.randrange(2) > 0:
                hot = rng.randrange(len(HOT_CHANNELS))
                channel, url = HOT_CHANNELS[hot], hot_urls[hot]
            else:
                channel, url = rng.choice(channels)
            files["bid"].write(
                f'{{"auction":{FIRST_AUCTION_ID + auction},"bidder":{FIRST_PERSON_ID + bidder},'
                f'"price":{price(rng)},"channel":"{channel}","url":"{url}",'
                f'"date_time":{time_ms},"extra":"{letters.extra(32, 100)}"}}\n')
        counts[["person", "auction", "auction", "auction"][slot] if slot <= 3 else "bid"] += 1
    for file in files.values():
        file.close()
    return counts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("events_dir")
    parser.add_argument("--events", type=int, default=200_000, help="total events (default 200000)")
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    counts = write_events(args.events_dir, args.events, args.seed)
    print(f"wrote {args.events} events to {args.events_dir}: {counts}")


if __name__ == "__main__":
    main()
