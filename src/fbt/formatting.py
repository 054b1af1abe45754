"""Counts as people read them in headers and tables."""


def format_count(count: int, decimals: int = 1) -> str:
    """1234567 -> "1.2M" (decimals=1); small counts stay whole."""
    for threshold, suffix in ((1e9, "B"), (1e6, "M"), (1e3, "K")):
        if count >= threshold:
            return f"{count / threshold:.{decimals}f}{suffix}"
    return str(count)
