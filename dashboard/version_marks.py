"""Flagged versions marked on a comparison chart: the version's tick in red, with the regions flagged."""
from __future__ import annotations

import html
from typing import Mapping, Sequence

import plotly.graph_objects as go

FLAG_COLOUR = "#d62728"


def tick_text(name: str, regions: list[str]) -> str:
    """A version's tick: its name, and under it "flagged: cage" in red when its audit flags a region."""
    name = html.escape(str(name))
    if not regions:
        return name
    return f'<span style="color:{FLAG_COLOUR}"><b>{name}</b><br>flagged: {html.escape(", ".join(regions))}</span>'


def mark_flagged(figure: go.Figure, versions: list[str], flagged: Mapping[str, Sequence[str]]) -> go.Figure:
    """`figure`'s x axis in the order of `versions` (the comparison's run names), flagged ones marked
    (`flagged`: the comparison's regions flagged per version, `Comparison.flagged`)."""
    figure.update_xaxes(type="category", categoryorder="array", categoryarray=list(versions),
                        tickmode="array", tickvals=list(versions),
                        ticktext=[tick_text(v, list(flagged[v]) if v in flagged else []) for v in versions])
    return figure
