"""A p-value in words: "= 0.012", or "< 1e-300" where the float underflowed to 0 (an exact test on hundreds of
one-sided discordant pairs does), which printed as "p = 0", a certainty no test gives."""
from __future__ import annotations

TINY = 1e-300


def p_equals(p: float) -> str:
    """The comparison and number after "p": "= 0.012", "= 1.1e-06", or "< 1e-300" for an underflowed 0."""
    return f"< {TINY:.0e}" if p < TINY else f"= {p:.2g}"
