"""A seeded substitute for a bilingual word list (petrov.appC.translation-needs-lora).

The authors' branch (memory_capacity) translated 4,921 British-English words of PHOR-in-One into
German (pretraining) and Spanish (the new task), character by character. No such list can be
downloaded here, so this module *generates* one, deterministically from a seed, with the property
the claim is about: the new language's word forms are new KNOWLEDGE (a lookup the pretrained model
does not have), while the task FORMAT (read a source word, write its translation) is unchanged.

Alphabet and tokens (vocabulary 30):
    0 DUMMY  (the prefix slot token, as in the companion code; never in a word)
    1 PAD    (left padding of source words; right padding after EOS)
    2 SEP    ('=', between the source word and its translation)
    3 EOS    ('.', end of the translation)
    4..29    the letters a..z

Words (consonant/vowel alternation, like pronounceable words; vowels aeiou):
    source word   w_i, i < N: length uniform in [SOURCE_MIN, SOURCE_MAX], distinct
    translation   t_L(w_i) in language L in {A, B}, each language drawn independently:
                  with probability p_cognate, a COGNATE  t_L(w) = sigma_L(w) + suffix_L
                      sigma_L: a letter substitution that moves CHANGED_CONSONANTS consonants and
                      CHANGED_VOWELS vowels (a derangement of a random subset, identity elsewhere:
                      "sound changes"), suffix_L a language-specific ending (like German -en,
                      Spanish -o);
                  otherwise an ARBITRARY word: a fresh random word of length in
                      [TARGET_MIN, TARGET_MAX], independent of w (like "dog" -> "Hund" / "perro").
Why partly systematic and partly arbitrary: real German and Spanish share cognates with English
(systematic, learnable as a rule), but most of a vocabulary is arbitrary; and *which* words are
cognates in a language is itself per-word knowledge. A wholly systematic language B would make the
new task a rule (an algorithmic skill, the case of Sec. 5), a wholly arbitrary one drops the
realistic overlap. The two languages are independent given the source words: knowing A says
nothing about B's arbitrary words.

Sequence layout (fixed, so that batches need no ragged handling), with n_S dummy prefix slots:
    [0]*n_S  PAD..PAD w  SEP  t  EOS PAD..PAD
             <-SOURCE_MAX->   <-T_MAX + 1-->
The model reads x = seq[:-1] and predicts y = seq[1:]; y = IGNORE except at the positions whose
target is a translation letter or its EOS (the loss is on the translation only, as the digit tasks
put it on the solution).

Evaluation: exact match of the whole translation: greedy decoding of T_MAX + 1 tokens after SEP,
correct iff the tokens up to and including the first EOS equal t + EOS. The lexicon is what is
memorised, so the evaluation set IS the training word list (all N words, each once; no sampling):
for an arbitrary word there is nothing to generalise from, and the branch's notebook trains and
scores on the same list as far as we know. (Cognates could be generalised to unseen words; that is
not the claim.)
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from verify.experiments.tasks import IGNORE

DUMMY, PAD, SEP, EOS = 0, 1, 2, 3
LETTERS = "abcdefghijklmnopqrstuvwxyz"
FIRST_LETTER = 4
VOCAB_SIZE = FIRST_LETTER + len(LETTERS)  # 30
VOWELS = "aeiou"
CONSONANTS = "".join(c for c in LETTERS if c not in VOWELS)
SOURCE_MIN, SOURCE_MAX = 3, 5
TARGET_MIN, TARGET_MAX = 3, 6
SUFFIXES = {"A": "en", "B": "o"}  # a German-like and a Spanish-like ending
CHANGED_CONSONANTS, CHANGED_VOWELS = 6, 2
T_MAX = max(TARGET_MAX, SOURCE_MAX + max(len(s) for s in SUFFIXES.values()))  # longest translation
LANGUAGE_TAGS = {"A": 0xA, "B": 0xB}


def block_size(n_prefix: int) -> int:
    """Length of x: n_S + SOURCE_MAX + 1 (SEP) + T_MAX + 1 (EOS) - 1."""
    return n_prefix + SOURCE_MAX + T_MAX + 1


def random_word(rng: np.random.Generator, low: int, high: int) -> str:
    """A word of length uniform in [low, high], alternating consonants and vowels from a random start."""
    n = int(rng.integers(low, high + 1))
    vowel = bool(rng.integers(2))
    out = []
    for _ in range(n):
        pool = VOWELS if vowel else CONSONANTS
        out.append(pool[int(rng.integers(len(pool)))])
        vowel = not vowel
    return "".join(out)


def sound_change(rng: np.random.Generator) -> dict[str, str]:
    """sigma_L: a derangement of CHANGED_CONSONANTS random consonants (among themselves) and of
    CHANGED_VOWELS random vowels; identity on the other letters. Vowels stay vowels, so cognates keep
    the consonant/vowel shape."""
    sigma = {c: c for c in LETTERS}
    for pool, k in ((CONSONANTS, CHANGED_CONSONANTS), (VOWELS, CHANGED_VOWELS)):
        moved = [pool[i] for i in rng.choice(len(pool), size=k, replace=False)]
        shift = int(rng.integers(1, k))  # a cyclic shift by 1..k-1 moves every chosen letter
        for i, c in enumerate(moved):
            sigma[c] = moved[(i + shift) % k]
    return sigma


@dataclass(frozen=True)
class Language:
    """One target language: its sound change, suffix, and per-word translations."""

    name: str
    sigma: dict[str, str]
    suffix: str
    cognate: tuple[bool, ...]  # per source word
    words: tuple[str, ...]  # translations, aligned with the source words


@dataclass(frozen=True)
class Lexicon:
    """N source words and their translations into A and B (see the module docstring)."""

    seed: int
    source: tuple[str, ...]
    languages: dict[str, Language]

    def pairs(self, language: str) -> list[tuple[str, str]]:
        return list(zip(self.source, self.languages[language].words, strict=True))


def make_language(name: str, source: tuple[str, ...], p_cognate: float, seed: int) -> Language:
    """Translations of ``source`` into language ``name`` from a generator seeded by (seed, name)."""
    rng = np.random.default_rng([seed, 0x1E71C0, LANGUAGE_TAGS[name]])
    sigma = sound_change(rng)
    suffix = SUFFIXES[name]
    cognate = tuple(bool(v) for v in rng.random(len(source)) < p_cognate)
    words = tuple("".join(sigma[c] for c in w) + suffix if cog else random_word(rng, TARGET_MIN, TARGET_MAX)
                  for w, cog in zip(source, cognate, strict=True))
    return Language(name, sigma, suffix, cognate, words)


def make_lexicon(n_words: int, p_cognate: float, seed: int) -> Lexicon:
    """N distinct source words (rejection of repeats, in draw order) and languages A and B."""
    if n_words < 1 or not 0.0 <= p_cognate <= 1.0:
        raise ValueError(f"need n_words >= 1 and p_cognate in [0, 1], got {n_words}, {p_cognate}")
    rng = np.random.default_rng([seed, 0x1E71C0])
    seen: dict[str, None] = {}
    while len(seen) < n_words:
        seen.setdefault(random_word(rng, SOURCE_MIN, SOURCE_MAX))
    source = tuple(seen)
    return Lexicon(seed, source, {name: make_language(name, source, p_cognate, seed) for name in ("A", "B")})


def encode(word: str) -> list[int]:
    return [FIRST_LETTER + LETTERS.index(c) for c in word]


def decode(tokens: list[int]) -> str:
    """Letters up to the first EOS ('?' for a non-letter token before it)."""
    out = []
    for t in tokens:
        if t == EOS:
            break
        out.append(LETTERS[t - FIRST_LETTER] if t >= FIRST_LETTER else "?")
    return "".join(out)


def prompts(source: list[str], n_prefix: int) -> np.ndarray:
    """(n, n_S + SOURCE_MAX + 1): dummy slots, left-padded source word, SEP."""
    rows = [[DUMMY] * n_prefix + [PAD] * (SOURCE_MAX - len(w)) + encode(w) + [SEP] for w in source]
    return np.asarray(rows, dtype=np.int64)


def sequences(pairs: list[tuple[str, str]], n_prefix: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Pairs -> (x, y), both (n, block_size(n_S)); y = IGNORE except at translation letters and EOS."""
    head = prompts([w for w, _ in pairs], n_prefix)  # (n, P)
    tail = np.asarray([encode(t) + [EOS] + [PAD] * (T_MAX - len(t)) for _, t in pairs], dtype=np.int64)
    seq = np.concatenate([head, tail], axis=1)  # (n, P + T_MAX + 1)
    x, y = seq[:, :-1].copy(), seq[:, 1:].copy()
    y[:, : head.shape[1] - 1] = IGNORE  # predictions before SEP's successor
    lengths = np.asarray([len(t) for _, t in pairs])
    after_eos = np.arange(T_MAX + 1)[None, :] > lengths[:, None]  # (n, T_MAX + 1) target columns past EOS
    y[:, head.shape[1] - 1:][after_eos] = IGNORE
    return torch.from_numpy(x), torch.from_numpy(y)


class LexiconStream:
    """Training batches of (source, translation in ``language``): epochs over the N words in a
    seeded random order (each word once per epoch), batch_size pairs a batch. Checkpointable."""

    def __init__(self, lexicon: Lexicon, language: str, seed: int, n_prefix: int, batch_size: int) -> None:
        self.x, self.y = sequences(lexicon.pairs(language), n_prefix)  # (N, T) each
        self.batch_size = batch_size
        self.rng = np.random.default_rng([seed, 0x57AE, LANGUAGE_TAGS[language]])
        self.order = self.rng.permutation(len(self.x))
        self.position = 0

    def next(self) -> tuple[torch.Tensor, torch.Tensor]:
        take: list[np.ndarray] = []
        need = self.batch_size
        while need > 0:
            if self.position == len(self.order):
                self.order, self.position = self.rng.permutation(len(self.x)), 0
            chunk = self.order[self.position:self.position + need]
            self.position += len(chunk)
            need -= len(chunk)
            take.append(chunk)
        idx = torch.from_numpy(np.concatenate(take))
        return self.x[idx], self.y[idx]

    def state(self) -> dict:
        return {"rng": self.rng.bit_generator.state, "order": self.order.tolist(), "position": self.position}

    def load_state(self, state: dict) -> None:
        self.rng.bit_generator.state = state["rng"]
        self.order = np.asarray(state["order"], dtype=np.int64)
        self.position = int(state["position"])


@torch.no_grad()
def translate(model: torch.nn.Module, source: list[str], n_prefix: int, batch: int = 1024) -> list[str]:
    """Greedy translations (letters up to the first EOS) of ``source`` words."""
    from verify.experiments.gpt import generate

    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    out: list[str] = []
    for start in range(0, len(source), batch):
        x = torch.from_numpy(prompts(source[start:start + batch], n_prefix)).to(device)
        pred = generate(model, x, T_MAX + 1).cpu().tolist()  # (b, T_MAX + 1)
        out.extend(decode(row) if EOS in row else decode(row) + "?" for row in pred)
    model.train(was_training)
    return out


def exact_match(model: torch.nn.Module, lexicon: Lexicon, language: str, n_prefix: int,
                subset: tuple[bool, ...] | None = None) -> float:
    """Fraction of the word list (or of the words where ``subset`` is True) whose greedy
    translation, up to and including EOS, equals the lexicon's."""
    pairs = [p for k, p in enumerate(lexicon.pairs(language)) if subset is None or subset[k]]
    if not pairs:
        return float("nan")
    guesses = translate(model, [w for w, _ in pairs], n_prefix)
    return sum(g == t for g, (_, t) in zip(guesses, pairs, strict=True)) / len(pairs)
