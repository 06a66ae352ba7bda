"""Estimated cost of tokens, from the operator's prices per model.

Prices are per million tokens, input (prompt) and output (completion), in
whatever currency the operator wrote them in (``CHATSITE_MODEL_PRICES``); a
cost is always an estimate: the upstream's bill is the truth, and a reply whose
tokens chatsite counted itself (``usage_counted``) is an estimate of an
estimate. No Django here: callers pass the prices in.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from fnmatch import fnmatchcase

MILLION = Decimal(1_000_000)
#: Costs are kept to this many places (a millionth of the unit).
COST_PLACES = Decimal("0.000001")


@dataclass(frozen=True, slots=True)
class ModelPrice:
    """Per million tokens."""

    input: Decimal
    output: Decimal


def price_table(*, prices: dict[str, dict[str, str]]) -> dict[str, ModelPrice]:
    """The setting's shape (``chatsite.environment.env_prices``) as prices."""
    return {
        model: ModelPrice(Decimal(p.get("input", "0")), Decimal(p.get("output", "0")))
        for model, p in prices.items()
    }


def price_for(*, model: str, prices: dict[str, ModelPrice]) -> ModelPrice | None:
    """The price of ``model`` ("<provider>/<model id>"): its own entry, else the
    longest glob that matches it (the most specific), else None."""
    exact = prices.get(model)
    if exact is not None:
        return exact
    matching = [
        pattern for pattern in prices if any(c in pattern for c in "*?[") and fnmatchcase(model, pattern)
    ]
    if not matching:
        return None
    return prices[max(matching, key=len)]


def cost_estimate(*, price: ModelPrice, prompt_tokens: int, completion_tokens: int) -> Decimal:
    """What the tokens cost at ``price``, to a millionth of the unit."""
    amount = (price.input * prompt_tokens + price.output * completion_tokens) / MILLION
    return amount.quantize(COST_PLACES)
