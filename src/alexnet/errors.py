"""The one exception type a user of the toolkit has to know about, and how its messages quote values."""

import re
import reprlib


class AlexNetError(RuntimeError):
    """An error the user can fix: the message says what went wrong and what to do.

    The command line prints these without a traceback and exits with ``exit_code`` (2; a training
    run that stopped because it diverged: 3); library callers catch them like any other exception.
    """

    exit_code = 2


_QUOTE = reprlib.Repr()  # a YAML alias bomb repr()'d whole would fill memory: nested levels and lists cut short
_QUOTE.maxstring, _QUOTE.maxother, _QUOTE.maxlist, _QUOTE.maxdict, _QUOTE.maxlevel = 60, 60, 4, 4, 2
QUOTE_LIMIT = 120  # characters


def quote(value: object) -> str:
    """``repr(value)``, cut short: what an error message may show of a value a user gave."""
    text = _QUOTE.repr(value)
    return text if len(text) <= QUOTE_LIMIT else text[: QUOTE_LIMIT - 3] + "..."


_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


def reason(error: BaseException, limit: int = 240) -> str:
    """What a library's exception says, fit for one line of ours: terminal colour codes removed
    (torch's ``weights_only`` refusal is printed bold), lines joined, and, when too long, cut at the
    end of a sentence rather than in the middle of one."""
    text = " ".join(_ANSI.sub("", str(error)).split()) or type(error).__name__
    if len(text) <= limit:
        return text
    cut = text[:limit]
    end = max(cut.rfind(". "), cut.rfind("; "), cut.rfind(": "))
    return (cut[:end + 1] if end > limit // 3 else cut.rsplit(" ", 1)[0]) + " ..."
