"""Geography: states, their cities and capitals, and two-hop questions.

Ground truth for the multi-hop study: ``city -> state -> capital``. A seeded share of each
state's cities is held out: their one-hop facts are in the corpus, their two-hop questions never.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

# (state, capital, region, cities). Every name is one word, so one token, and unique.
STATES: tuple[tuple[str, str, str, tuple[str, ...]], ...] = (
    (
        "Texas",
        "Austin",
        "South",
        (
            "Dallas",
            "Houston",
            "Waco",
            "Lubbock",
            "Amarillo",
            "Laredo",
            "Odessa",
            "Abilene",
            "Midland",
        ),
    ),
    (
        "California",
        "Sacramento",
        "West",
        (
            "Oakland",
            "Fresno",
            "Berkeley",
            "Pasadena",
            "Anaheim",
            "Stockton",
            "Modesto",
            "Irvine",
            "Burbank",
        ),
    ),
    (
        "Georgia",
        "Atlanta",
        "South",
        (
            "Savannah",
            "Augusta",
            "Macon",
            "Athens",
            "Valdosta",
            "Rome",
            "Dalton",
            "Marietta",
            "Smyrna",
        ),
    ),
    (
        "NewYork",
        "Albany",
        "Northeast",
        (
            "Buffalo",
            "Rochester",
            "Syracuse",
            "Yonkers",
            "Ithaca",
            "Utica",
            "Binghamton",
            "Schenectady",
            "Poughkeepsie",
        ),
    ),
    (
        "Florida",
        "Tallahassee",
        "South",
        (
            "Miami",
            "Orlando",
            "Tampa",
            "Jacksonville",
            "Gainesville",
            "Pensacola",
            "Sarasota",
            "Naples",
            "Ocala",
        ),
    ),
    (
        "Illinois",
        "Springfield",
        "Midwest",
        (
            "Chicago",
            "Peoria",
            "Rockford",
            "Naperville",
            "Joliet",
            "Elgin",
            "Evanston",
            "Champaign",
            "Decatur",
        ),
    ),
    (
        "Ohio",
        "Columbus",
        "Midwest",
        (
            "Cleveland",
            "Cincinnati",
            "Toledo",
            "Akron",
            "Dayton",
            "Youngstown",
            "Canton",
            "Lorain",
            "Sandusky",
        ),
    ),
    (
        "Pennsylvania",
        "Harrisburg",
        "Northeast",
        (
            "Philadelphia",
            "Pittsburgh",
            "Allentown",
            "Erie",
            "Scranton",
            "Reading",
            "Lancaster",
            "Bethlehem",
            "Altoona",
        ),
    ),
    (
        "Michigan",
        "Lansing",
        "Midwest",
        (
            "Detroit",
            "Flint",
            "Kalamazoo",
            "Saginaw",
            "Muskegon",
            "Dearborn",
            "Livonia",
            "Warren",
            "Pontiac",
        ),
    ),
    (
        "Washington",
        "Olympia",
        "West",
        (
            "Seattle",
            "Spokane",
            "Tacoma",
            "Bellevue",
            "Everett",
            "Yakima",
            "Kent",
            "Redmond",
            "Renton",
        ),
    ),
    (
        "Arizona",
        "Phoenix",
        "West",
        (
            "Tucson",
            "Mesa",
            "Chandler",
            "Scottsdale",
            "Tempe",
            "Flagstaff",
            "Yuma",
            "Glendale",
            "Prescott",
        ),
    ),
    (
        "Colorado",
        "Denver",
        "West",
        (
            "Boulder",
            "Pueblo",
            "Aurora",
            "Lakewood",
            "Greeley",
            "Longmont",
            "Loveland",
            "Durango",
            "Arvada",
        ),
    ),
    (
        "Tennessee",
        "Nashville",
        "South",
        (
            "Memphis",
            "Knoxville",
            "Chattanooga",
            "Clarksville",
            "Murfreesboro",
            "Franklin",
            "Jackson",
            "Kingsport",
            "Cookeville",
        ),
    ),
    (
        "Oregon",
        "Salem",
        "West",
        (
            "Portland",
            "Eugene",
            "Bend",
            "Medford",
            "Corvallis",
            "Beaverton",
            "Hillsboro",
            "Gresham",
            "Ashland",
        ),
    ),
    (
        "Massachusetts",
        "Boston",
        "Northeast",
        (
            "Worcester",
            "Cambridge",
            "Lowell",
            "Quincy",
            "Brockton",
            "Newton",
            "Lynn",
            "Plymouth",
            "Framingham",
        ),
    ),
    (
        "Virginia",
        "Richmond",
        "South",
        (
            "Norfolk",
            "Arlington",
            "Roanoke",
            "Alexandria",
            "Hampton",
            "Lynchburg",
            "Chesapeake",
            "Danville",
            "Suffolk",
        ),
    ),
)

CITY_FACTS = (
    "{city} is a city in {state} .",
    "{city} is in {state} .",
    "The city of {city} is located in {state} .",
    "{city} lies in the state of {state} .",
    "Fact : {city} is in {state} .",
)
CAPITAL_FACTS = (
    "The capital of {state} is {capital} .",
    "{capital} is the capital of {state} .",
    "Fact : the capital of {state} is {capital} .",
)
REGION_FACTS = ("{state} is in the {region} .", "Fact : {state} lies in the {region} .")
TWO_HOP_PROMPT = "Fact : the capital of the state containing {city} is"
TWO_HOP_REGION = "Fact : the region of the state containing {city} is the"


@dataclass(frozen=True)
class Geography:
    states: dict[str, dict]  # state -> {"capital", "region", "cities"}
    city_state: dict[str, str]
    heldout_cities: tuple[str, ...]

    @classmethod
    def build(cls, rng: random.Random, n_states: int, cities_per_state: int, heldout_frac: float):
        if not 1 <= n_states <= len(STATES):
            raise ValueError(f"world.n_states must be in 1..{len(STATES)}, got {n_states}")
        if not 2 <= cities_per_state <= 9:
            raise ValueError(f"world.cities_per_state must be in 2..9, got {cities_per_state}")
        states, city_state, heldout = {}, {}, []
        for name, capital, region, cities in STATES[:n_states]:
            chosen = list(cities[:cities_per_state])
            states[name] = {"capital": capital, "region": region, "cities": chosen}
            city_state.update({c: name for c in chosen})
            n_out = max(1, round(heldout_frac * len(chosen)))
            heldout += rng.sample(chosen, n_out)
        return cls(states, city_state, tuple(sorted(heldout)))

    def capital_of_city(self, city: str) -> str:
        return self.states[self.city_state[city]]["capital"]

    def document(self, rng: random.Random) -> str:
        """One training document: a one-hop fact or a two-hop question about a training city."""
        city = rng.choice(sorted(self.city_state))
        state = self.city_state[city]
        info = self.states[state]
        kind = rng.random()
        if kind < 0.35:
            return rng.choice(CITY_FACTS).format(city=city, state=state)
        if kind < 0.5:
            return rng.choice(CAPITAL_FACTS).format(state=state, capital=info["capital"])
        if kind < 0.6:
            return rng.choice(REGION_FACTS).format(state=state, region=info["region"])
        city = rng.choice(self.train_cities())
        state = self.city_state[city]
        if kind < 0.9:
            return f"{TWO_HOP_PROMPT.format(city=city)} {self.states[state]['capital']} ."
        return f"{TWO_HOP_REGION.format(city=city)} {self.states[state]['region']} ."

    def train_cities(self) -> list[str]:
        held = set(self.heldout_cities)
        return [c for c in sorted(self.city_state) if c not in held]

    def eval_items(self) -> list[dict]:
        """Two-hop prompts for every city, with the answer and split."""
        held = set(self.heldout_cities)
        return [
            {
                "task": "two_hop",
                "split": "heldout" if c in held else "seen",
                "prompt": TWO_HOP_PROMPT.format(city=c),
                "answer": self.capital_of_city(c),
                "city": c,
                "state": self.city_state[c],
            }
            for c in sorted(self.city_state)
        ]

    def to_json(self) -> dict:
        return {
            "states": self.states,
            "city_state": self.city_state,
            "heldout_cities": list(self.heldout_cities),
        }

    @classmethod
    def from_json(cls, d: dict) -> Geography:
        return cls(d["states"], d["city_state"], tuple(d["heldout_cities"]))
