"""What a benchmark sends and when: popularity, arrivals, inputs, and the schedule built from them.

Every random choice is drawn from its own stream of one seed (``numpy.random.SeedSequence``
spawned per purpose), so changing, say, the arrival process leaves the adapters and the
texts of the requests as they were.

* Popularity over N adapters (rank 1 = the first adapter of the list):
  ``zipf:S``: p(i) proportional to 1 / i**S; ``power:A``: S-LoRA's power law, an adapter is
  ``floor(N * x)`` with x drawn from ``numpy``'s power distribution (pdf A x**(A-1) on
  [0, 1]; smaller A is more skewed), so p(i) = ((i+1)/N)**A - (i/N)**A; ``uniform``.
* Arrivals at ``rate`` per second: ``poisson`` (exponential gaps, CV 1) or ``gamma:CV``
  (gamma gaps with shape 1/CV**2: CV > 1 is burstier than Poisson, CV < 1 smoother).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

# A fixed vocabulary of common English words: inputs are made of these, so they tokenize
# to about one token per word on WordPiece and BPE tokenizers alike.
WORDS = tuple(dict.fromkeys("""
the of and to in is was for on that with as by at from his it an were are which this be
has had not they but one first new after who two their have been its time also over
year more she would other when only most into all some can about world game against
during between three under city film series music school state people may where used
team season many made up out them while him such later before well best both since
high four known part second work years several early home life book water government
number war last then five these through back end same day place group house team could
good small great story light river road market price company report share rise fell
strong quiet bright dark warm cold fast slow open close green blue red white black
""".split()))


class WorkloadError(ValueError):
    """A workload option that cannot be parsed or used; the message says which."""


@dataclass(frozen=True)
class PlannedRequest:
    """One request of the schedule.

    index: position in the schedule; at: seconds after the start when it is due; adapter:
    the ``model`` field (an adapter name or the base model's name); text: the input;
    input_words: words in ``text``; max_tokens: tokens to generate (generate only, else 0).
    """

    index: int
    at: float
    adapter: str
    text: str
    input_words: int
    max_tokens: int = 0


@dataclass(frozen=True)
class WorkloadSpec:
    """Everything that decides a schedule.

    popularity: ``zipf:S`` | ``power:A`` | ``uniform``; rate: offered requests per second;
    arrival: ``poisson`` | ``gamma:CV``; duration: seconds of arrivals; input_len /
    output_len: inclusive ranges of words per input and tokens per output;
    max_requests: cap on the count (None: no cap); seed: the seed of every stream.
    """

    popularity: str = "zipf:1.1"
    rate: float = 4.0
    arrival: str = "poisson"
    duration: float = 30.0
    input_len: tuple[int, int] = (8, 32)
    output_len: tuple[int, int] = (16, 64)
    max_requests: int | None = None
    seed: int = 0

    def to_dict(self) -> dict:
        return asdict(self)


def parse_range(text: str) -> tuple[int, int]:
    """``"A:B"`` (or ``"A"``) -> (A, B), with 1 <= A <= B."""
    parts = text.split(":")
    try:
        low, high = (int(parts[0]), int(parts[-1])) if len(parts) <= 2 else (None, None)
    except ValueError:
        low = high = None
    if low is None or low < 1 or high < low:
        raise WorkloadError(f"a length range is A:B with 1 <= A <= B, not {text!r}")
    return low, high


def _kind_and_value(text: str, default: float | None) -> tuple[str, float | None]:
    kind, _, value = text.partition(":")
    if not value:
        return kind, default
    try:
        return kind, float(value)
    except ValueError:
        raise WorkloadError(f"{text!r}: the value after ':' must be a number") from None


def popularity_weights(spec: str, n: int) -> np.ndarray:
    """Probabilities of the n adapters, most popular first. spec: zipf:S | power:A | uniform."""
    if n < 1:
        raise WorkloadError("popularity needs at least one adapter")
    kind, value = _kind_and_value(spec, None)
    ranks = np.arange(1, n + 1, dtype=np.float64)
    if kind == "uniform":
        return np.full(n, 1.0 / n)
    if kind == "zipf" and value is not None and value > 0:
        weights = ranks ** -value
        return weights / weights.sum()
    if kind == "power" and value is not None and value > 0:
        edges = np.arange(n + 1, dtype=np.float64) / n
        return np.diff(edges ** value)
    raise WorkloadError(f"popularity is zipf:S, power:A (S, A > 0) or uniform, not {spec!r}")


def sample_adapters(spec: str, names: list[str], count: int, rng: np.random.Generator) -> list[str]:
    """``count`` adapter names drawn by popularity ``spec`` (rank 1 = ``names[0]``)."""
    picks = rng.choice(len(names), size=count, p=popularity_weights(spec, len(names)))
    return [names[i] for i in picks]


def arrival_gaps(spec: str, rate: float, count: int, rng: np.random.Generator) -> np.ndarray:
    """``count`` gaps between arrivals (seconds) at mean ``rate`` per second. spec: poisson | gamma:CV."""
    if rate <= 0:
        raise WorkloadError(f"the rate must be positive, not {rate}")
    kind, cv = _kind_and_value(spec, None)
    if kind == "poisson" and cv is None:
        return rng.exponential(1.0 / rate, size=count)
    if kind == "gamma" and cv is not None and cv > 0:
        shape = 1.0 / cv ** 2
        return rng.gamma(shape, 1.0 / (rate * shape), size=count)
    raise WorkloadError(f"arrival is poisson or gamma:CV (CV > 0), not {spec!r}")


def arrival_times(spec: str, rate: float, duration: float, max_requests: int | None,
                  rng: np.random.Generator) -> np.ndarray:
    """Arrival times in [0, duration), at most ``max_requests`` of them; the first arrives at 0."""
    expected = int(rate * duration * 1.5 + 10 * np.sqrt(rate * duration) + 16)
    cap = expected if max_requests is None else min(expected, max_requests)
    gaps = arrival_gaps(spec, rate, cap, rng)
    times = np.concatenate([[0.0], np.cumsum(gaps[:-1])]) if cap else np.zeros(0)
    return times[times < duration]


def synthetic_text(words: int, rng: np.random.Generator) -> str:
    """A text of ``words`` words from :data:`WORDS`."""
    return " ".join(WORDS[i] for i in rng.integers(0, len(WORDS), size=words))


def build_schedule(spec: WorkloadSpec, names: list[str]) -> list[PlannedRequest]:
    """The schedule of ``spec`` over adapters ``names`` (most popular first), in time order."""
    arrivals_rng, adapters_rng, inputs_rng = (np.random.default_rng(s)
                                             for s in np.random.SeedSequence(spec.seed).spawn(3))
    times = arrival_times(spec.arrival, spec.rate, spec.duration, spec.max_requests, arrivals_rng)
    adapters = sample_adapters(spec.popularity, names, len(times), adapters_rng)
    requests = []
    for index, (at, adapter) in enumerate(zip(times.tolist(), adapters)):
        words = int(inputs_rng.integers(spec.input_len[0], spec.input_len[1] + 1))
        max_tokens = int(inputs_rng.integers(spec.output_len[0], spec.output_len[1] + 1))
        requests.append(PlannedRequest(index, at, adapter, synthetic_text(words, inputs_rng), words, max_tokens))
    return requests
