"""Demo tools for the seed trip example.

DEMO DATA: these tools answer from a small offline table shipped in this file, not from a live
weather or flight service. They exist so the whole graph runs with no network; swap in real
implementations with the same signatures for production.
"""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

from toolrail.tools.registry import ToolRegistry

demo_tools = ToolRegistry()

_CITIES = {
    "new york": "New York, NY", "nyc": "New York, NY", "new york city": "New York, NY",
    "new york, ny": "New York, NY", "jfk": "New York, NY",
    "san francisco": "San Francisco, CA", "sf": "San Francisco, CA", "sfo": "San Francisco, CA",
    "san francisco, ca": "San Francisco, CA",
    "chicago": "Chicago, IL", "chicago, il": "Chicago, IL", "ord": "Chicago, IL",
}
_WEATHER = {
    "New York, NY": {"conditions": "light rain, clearing by evening", "high_c": 9, "low_c": 3, "precipitation_pct": 70},
    "San Francisco, CA": {"conditions": "fog in the morning, then sunny", "high_c": 16, "low_c": 10, "precipitation_pct": 10},
    "Chicago, IL": {"conditions": "windy and cold", "high_c": 2, "low_c": -4, "precipitation_pct": 20},
}
_AIRPORTS = {"New York, NY": "JFK", "San Francisco, CA": "SFO", "Chicago, IL": "ORD"}
_FLIGHTS = [
    {"flight": "UA 1532", "from": "SFO", "to": "JFK", "depart": "07:05", "arrive": "15:38", "stops": 0, "price_usd": 289},
    {"flight": "B6 916", "from": "SFO", "to": "JFK", "depart": "12:15", "arrive": "20:52", "stops": 0, "price_usd": 254},
    {"flight": "AA 2280", "from": "SFO", "to": "JFK", "depart": "09:40", "arrive": "19:55", "stops": 1, "price_usd": 198},
    {"flight": "DL 421", "from": "JFK", "to": "SFO", "depart": "08:00", "arrive": "11:31", "stops": 0, "price_usd": 301},
    {"flight": "UA 657", "from": "ORD", "to": "JFK", "depart": "06:30", "arrive": "09:45", "stops": 0, "price_usd": 142},
    {"flight": "AA 1104", "from": "SFO", "to": "ORD", "depart": "10:10", "arrive": "16:20", "stops": 0, "price_usd": 176},
]


def _city(name: str) -> str:
    key = name.strip().lower()
    if key not in _CITIES:
        known = ", ".join(sorted(set(_CITIES.values())))
        raise ValueError(f"no demo data for {name!r}; the demo table knows: {known}")
    return _CITIES[key]


@demo_tools.register(timeout=5)
def get_weather(location: str) -> dict:
    """Get today's weather forecast for a city (DEMO: answers from an offline table).

    Args:
        location: City name, e.g. "New York" or "San Francisco".
    """
    city = _city(location)
    return {"location": city, **_WEATHER[city]}


@demo_tools.register(timeout=5)
def search_flights(
    origin: str,
    destination: str,
    date: dt.date | None = None,
    max_stops: Annotated[int, Field(ge=0, le=2)] = 2,
) -> dict:
    """Search flights between two cities (DEMO: answers from an offline table).

    Args:
        origin: Departure city or airport code, e.g. "SF" or "SFO".
        destination: Arrival city or airport code, e.g. "NYC" or "JFK".
        date: Travel date (YYYY-MM-DD); null for the next available day.
        max_stops: Most stops acceptable (0 = nonstop only).
    """
    start, end = _AIRPORTS[_city(origin)], _AIRPORTS[_city(destination)]
    flights = [f for f in _FLIGHTS if f["from"] == start and f["to"] == end and f["stops"] <= max_stops]
    day = date or dt.date.today() + dt.timedelta(days=1)
    return {"date": day.isoformat(), "flights": sorted(flights, key=lambda f: f["price_usd"])}


class Traveler(BaseModel):
    model_config = ConfigDict(extra="forbid")
    age: int = Field(ge=0, le=120, description="Age in years.")
    checked_bags: int = Field(0, ge=0, le=3, description="Checked bags, 0 to 3.")


class TripCostArgs(BaseModel):
    """Arguments of estimate_trip_cost: nested and constrained so validation has teeth."""

    model_config = ConfigDict(extra="forbid")
    travelers: list[Traveler] = Field(min_length=1, max_length=9, description="Everyone travelling.")
    cabin: Literal["economy", "premium_economy", "business"] = Field(description="Cabin class.")
    nights: int = Field(ge=1, le=30, description="Hotel nights, 1 to 30.")
    fare_usd: float = Field(gt=0, description="One adult's round-trip fare in USD.")


_CABIN_FACTOR = {"economy": 1.0, "premium_economy": 1.6, "business": 3.2}


@demo_tools.register(args_model=TripCostArgs, timeout=5)
def estimate_trip_cost(travelers: list[Traveler], cabin: str, nights: int, fare_usd: float) -> dict:
    """Estimate a trip's total cost for a group (DEMO: fixed demo rates, not live prices)."""
    fares = sum(fare_usd * _CABIN_FACTOR[cabin] * (0.75 if t.age < 12 else 1.0) for t in travelers)
    bags = sum(35 * t.checked_bags for t in travelers)
    hotel = 210 * nights * -(-len(travelers) // 2)
    return {"fares_usd": round(fares, 2), "bags_usd": bags, "hotel_usd": hotel, "total_usd": round(fares + bags + hotel, 2)}
