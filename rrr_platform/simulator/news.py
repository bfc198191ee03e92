"""Headline text for the simulated news feed.

Tone words are chosen from VADER's lexicon (``vadersentiment`` is a platform dependency), so a
lexicon-based sentiment model can recover the planted tone from the text alone.
"""

from __future__ import annotations

POSITIVE_PHRASES = (
    "posts strong profit growth",
    "reports record gains as demand strengthens",
    "wins major contract, analysts optimistic",
    "shares boost after approval",
    "praised for strong results",
    "sees success in expansion, outlook strong",
    "gains on upbeat growth forecast",
    "delivers profit beat and strong guidance",
)
NEGATIVE_PHRASES = (
    "faces fraud lawsuit",
    "reports weak results and widening losses",
    "fails to meet targets amid fear of decline",
    "issues warning of weak sales",
    "hit by losses as crash fears spread",
    "misses estimates, outlook weak",
    "under fire after fraud allegations",
    "warns of losses on weak demand",
)
NEUTRAL_PHRASES = (
    "schedules quarterly results call",
    "to present at industry conference",
    "announces board meeting date",
    "files routine regulatory update",
    "updates index membership details",
    "publishes monthly operating report",
)
# Words that carry the tone; a test checks that every phrase of a tone contains one of them.
POSITIVE_WORDS = ("strong", "profit", "growth", "gains", "wins", "optimistic", "boost", "approval",
                  "praised", "success", "strengthens", "upbeat")
NEGATIVE_WORDS = ("fraud", "lawsuit", "weak", "losses", "fails", "fear", "warning", "crash", "misses")

PUBLISHERS = ("Simulated Wire", "Market Chronicle", "Ledger Daily", "Exchange Times")

DISPLAY_NAMES = {
    "BTC": "Bitcoin", "ETH": "Ethereum", "SOL": "Solana", "XRP": "XRP", "DOGE": "Dogecoin",
    "ADA": "Cardano", "AVAX": "Avalanche", "LINK": "Chainlink", "AAPL": "Apple", "MSFT": "Microsoft",
    "NVDA": "Nvidia", "AMZN": "Amazon", "GOOGL": "Alphabet", "TSLA": "Tesla",
}


def phrases_for(tone: int) -> tuple[str, ...]:
    if tone > 0:
        return POSITIVE_PHRASES
    if tone < 0:
        return NEGATIVE_PHRASES
    return NEUTRAL_PHRASES


def headline(names: list[str], tone: int, phrase_index: int) -> tuple[str, str]:
    """(title, description) for a headline about ``names`` with the given tone."""
    phrases = phrases_for(tone)
    phrase = phrases[phrase_index % len(phrases)]
    subject = " and ".join(names)
    title = f"{subject} {phrase}"
    description = f"{title}. Traders react to the news about {subject}."
    return title, description
