"""Reading JSON that comes from outside: data lines, config.json, vocab.json, metrics.jsonl.

``json.loads`` fails on hostile input in more ways than ``JSONDecodeError``:

* an array or object nested thousands deep raises ``RecursionError``;
* an integer of more than ``sys.get_int_max_str_digits()`` digits (4300 by default) raises a
  plain ``ValueError`` (Python refuses the quadratic-time conversion);
* an escape such as ``"\\ud800"`` decodes to a lone surrogate: a string that is not text, which
  cannot be encoded to UTF-8 and so fails much later, when it is tokenized or printed.

``load_json_text(text, source)`` turns each of these into one error whose message is one line
naming the source (a file, or a file and line), of the caller's error class::

    record = load_json_text(line, f"{path} line {number}", error=DataError)

``lone_surrogate(s)`` finds the first lone surrogate of any string, for text from elsewhere.
"""

import json
import re
import sys

__all__ = ["JSONInputError", "load_json_text", "lone_surrogate", "describe_value"]


class JSONInputError(ValueError):
    """JSON that cannot be used; the message is one line naming where it came from."""


# A \uD800-\uDFFF escape, or a surrogate character in the text itself: only then can the decoded
# value hold a lone surrogate, so only then is it searched (a pair is two such escapes too).
_MAY_HOLD_SURROGATE = re.compile(r"\\u[dD][89a-fA-F]|[\ud800-\udfff]")
_SURROGATE = re.compile(r"[\ud800-\udfff]")


def lone_surrogate(s):
    """Index of the first lone surrogate (U+D800..U+DFFF) in string ``s``, or -1.

    A correctly paired escape such as ``"\\ud83d\\ude42"`` is decoded by ``json`` into one
    character (U+1F642), so any surrogate left in a ``str`` has no partner: it is not text.
    """
    found = _SURROGATE.search(s)
    return -1 if found is None else found.start()


def describe_value(value, limit=40):
    """``repr(value)`` cut to about ``limit`` characters, for error messages about hostile input
    (a 4000-digit integer is described by its first digits and its length)."""
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) >= 10 ** limit:
        digits = str(abs(value))  # below the conversion limit: json would not have parsed it otherwise
        return f"{'-' if value < 0 else ''}{digits[:8]}... ({len(digits)} digits)"
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + "..."


def _int_digit_limit():
    get = getattr(sys, "get_int_max_str_digits", None)  # Python >= 3.11 (and 3.10.7+)
    return get() if get is not None else None


def load_json_text(text, source, error=JSONInputError):
    """Parse ``text`` as JSON; any problem raises ``error(message)``, the message one line
    starting with ``source``. Lone surrogates anywhere in the value (keys included) are refused."""
    try:
        value = json.loads(text)
    except json.JSONDecodeError as failure:
        where = f"column {failure.colno}" if failure.lineno == 1 else f"line {failure.lineno} column {failure.colno}"
        raise error(f"{source}: invalid JSON ({failure.msg} at {where})") from None
    except RecursionError:
        raise error(f"{source}: invalid JSON (arrays or objects nested too deeply to read)") from None
    except ValueError:  # the only other ValueError json raises on a str: the integer digit limit
        limit = _int_digit_limit()
        size = f"more than {limit} digits" if limit else "too many digits"
        raise error(f"{source}: invalid JSON (an integer with {size})") from None
    if _MAY_HOLD_SURROGATE.search(text) is not None:
        _refuse_lone_surrogates(value, source, error)
    return value


def _refuse_lone_surrogates(value, source, error):
    # An explicit stack, not recursion: the value may be nested nearly as deep as json allows.
    stack = [(value, "")]
    while stack:
        item, path = stack.pop()
        if isinstance(item, str):
            _check_string(item, f"the string at {path}" if path else "the string", source, error)
        elif isinstance(item, dict):
            entries = list(item.items())
            for key, child in reversed(entries):
                _check_string(key, f"the key {describe_value(key)} at {path or 'the top level'}", source, error)
                stack.append((child, f"{path}[{describe_value(key)}]"))
        elif isinstance(item, list):
            stack.extend((child, f"{path}[{i}]") for i, child in reversed(list(enumerate(item))))


def _check_string(s, what, source, error):
    index = lone_surrogate(s)
    if index >= 0:
        raise error(f"{source}: {what} holds a lone surrogate U+{ord(s[index]):04X} at character {index}, "
                    f"which is not text (a \\uD800-\\uDFFF escape must be one half of a pair)")
