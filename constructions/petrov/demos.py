"""The authors' demonstration tasks (constructions notebook), as total maps over printable ASCII."""

from __future__ import annotations

import string

ANIMALS = ("Alligator Bear Cat Dog Elephant Fox Giraffe Horse Iguana Jaguar Koala Lion Monkey "
           "Narwhal Owl Penguin Quail Rabbit Snake Tiger Urchin Vulture Wolf Xerus Yak Zebra").split()
FOODS = ("apple blueberries carrot donut eggplant fig grapes honey icecream jam kiwi lemon mango "
         "noodles olive pizza quinoa rice spaghetti tomato udon vanilla waffle xigua yogurt zucchini").split()

UNCONDITIONAL_TARGET = "I love transformers!"


def case_flip(symbols: tuple[str, ...]) -> dict[str, str]:
    """Theorem 2 demo: letters flip case, every other symbol maps to itself ("f" -> "F")."""
    return {s: s.swapcase() if s in string.ascii_letters else s for s in symbols}


def animals_and_foods(symbols: tuple[str, ...], response_length: int | None = None) -> dict[str, str]:
    """Long-response demo: a capital letter continues into an animal, a lower-case letter into a
    food ("b" -> "lueberries", so the text reads "blueberries"); other symbols answer blanks.
    With ``response_length`` every continuation is cut to that many symbols ("b" -> "lue")."""
    words = {w[0]: w for w in ANIMALS + FOODS}
    return {s: words[s][1:][:response_length] if s in words else "" for s in symbols}
