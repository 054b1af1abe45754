"""Numbers as people read them in headers and tables."""

from __future__ import annotations


def format_count(count: int, decimals: int = 1) -> str:
    """1234567 -> "1.2M" (decimals=1); small counts stay whole."""
    for threshold, suffix in ((1e9, "B"), (1e6, "M"), (1e3, "K")):
        if count >= threshold:
            return f"{count / threshold:.{decimals}f}{suffix}"
    return str(count)


def format_duration(seconds: float) -> str:
    """A duration for people: "45s", "12m 05s", "3h 27m", "2d 04h"."""
    seconds = max(0, int(round(seconds)))
    days, rest = divmod(seconds, 86_400)
    hours, rest = divmod(rest, 3_600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{days}d {hours:02d}h"
    if hours:
        return f"{hours}h {minutes:02d}m"
    if minutes:
        return f"{minutes}m {secs:02d}s"
    return f"{secs}s"
