"""State values, with PyYAML as the oracle: the Python side of tests/state_values.rs.

What it checks (docs/PROTOCOL.md, "State values"): a state file written the way an agent
writes it, by PyYAML's `yaml.safe_dump` with any of the options an agent might pass, or by
`json.dumps`, reaches the bridge's clients as the value PyYAML's `yaml.safe_load` reads from
that file (`json.loads` for a JSON file), converted to JSON by these rules:

- str, bool, None, list: string, true/false, null, array; a dict: an object, keys in the
  file's order (later duplicates keep the first one's place and take the later value);
- int: a JSON integer with exactly its digits, at any size;
- float: a JSON number equal to it, sign included (-0.0 stays -0.0); a non-finite float is
  the scalar's text as the file writes it (`.inf`, `-.inf`, `.nan`, or `1.0e+400`);
- date and datetime: `value.isoformat()`;
- keys that are not strings: int as decimal digits, bool as "true"/"false", None as "null",
  a finite float as `repr()`, a non-finite one as its text, date/datetime as isoformat().

It writes, one at a time, a table of named tricky scalars and then random documents (a seed
from STATE_VALUES_SEED, or a fresh one; STATE_VALUES_COUNT of them) to the state file named
on the command line, and talks to the Rust side in JSON lines:

  stdout  {"hello": {...}}                        once: PyYAML's version, the seed, the counts
          {"wrote": LABEL, "kind": "named"|"random"}   a document is in the state file
          {"verdict": "ok"} or {"verdict": "mismatch", "label": ..., "report": TEXT}
          {"done": {...}}                         the end, with the counts
  stdin   {"data": TEXT}       the raw JSON text of the `data` of the next `state` message
          {"refused": ERROR}   the bridge refused the file (its health's last error)
          {"silent": WHY}      neither a state nor an error came in time

Between two documents the Rust side writes a reset document of its own, so every document
differs from the one before it as the bridge sees it and each one sends a state.

Received JSON is compared value by value: objects key by key in order (a duplicated key is a
difference), integers by their exact digits, floats by value and sign.

PyYAML's own writer is not always read back as it was written (a U+0085 in a single-quoted
scalar comes back as a space or a line break; a double-quoted scalar folded at a narrow width
can gain a backslash): the bridge is compared with what PyYAML reads, and such documents are
counted in the summary.
"""

import datetime
import json
import math
import os
import random
import re
import struct
import sys

try:
    import yaml
except ImportError:
    missing = "PyYAML is not installed for " + sys.executable
    sys.stdout.write(json.dumps({"missing": missing}) + "\n")
    sys.exit(3)

DEFAULT_COUNT = 500


# --- the oracle: PyYAML's reading, converted by the rules ---------------------------------

class NonFinite(float):
    """A non-finite float that remembers the scalar's text in the file."""

    def __new__(cls, value, text):
        self = super().__new__(cls, value)
        self.text = text
        return self


class Loader(yaml.SafeLoader):
    """PyYAML's safe loader; non-finite floats keep the text they were written as."""


def _construct_float(loader, node):
    value = yaml.SafeLoader.construct_yaml_float(loader, node)
    return value if math.isfinite(value) else NonFinite(value, node.value)


Loader.add_constructor("tag:yaml.org,2002:float", _construct_float)


def pyyaml_reads(text):
    return yaml.load(text, Loader=Loader)


def non_finite_text(value):
    if isinstance(value, NonFinite):
        return value.text
    return ".nan" if math.isnan(value) else (".inf" if value > 0 else "-.inf")


def key_text(key):
    if isinstance(key, str):
        return key
    if isinstance(key, bool):
        return "true" if key else "false"
    if key is None:
        return "null"
    if isinstance(key, int):
        return str(int(key))
    if isinstance(key, float):
        return float.__repr__(key) if math.isfinite(key) else non_finite_text(key)
    if isinstance(key, datetime.date):  # datetime.datetime too
        return key.isoformat()
    raise TypeError(f"no rule for a key of type {type(key).__name__}: {key!r}")


def to_json(value):
    """The JSON value clients must receive for a value PyYAML (or json) read."""
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return value
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        return float(value) if math.isfinite(value) else non_finite_text(value)
    if isinstance(value, datetime.date):
        return value.isoformat()
    if isinstance(value, list):
        return [to_json(v) for v in value]
    if isinstance(value, dict):
        out = {}
        for k, v in value.items():
            out[key_text(k)] = to_json(v)  # a dict insert: a repeated key keeps its place
        return out
    raise TypeError(f"no rule for a value of type {type(value).__name__}: {value!r}")


def exact(value, ordered=True):
    """A form of a JSON value in which equal means the same: ints and floats apart, -0.0
    apart from 0.0, objects as ordered pairs (or sorted ones, with ordered=False)."""
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return (type(value).__name__, value)
    if isinstance(value, int):
        return ("int", value)
    if isinstance(value, float):
        return ("float", float.__repr__(value))
    if isinstance(value, list):
        return ("list", tuple(exact(v, ordered) for v in value))
    if isinstance(value, dict):
        pairs = [(k, exact(v, ordered)) for k, v in value.items()]
        return ("dict", tuple(pairs if ordered else sorted(pairs)))
    raise TypeError(repr(value))


# --- what clients received ----------------------------------------------------------------

class Number:
    """A JSON number as the bridge wrote it."""

    def __init__(self, text):
        self.text = text

    def is_integer_token(self):
        return re.fullmatch(r"-?[0-9]+", self.text) is not None


class Pairs(list):
    """A JSON object as the bridge wrote it: its (key, value) pairs in order."""


def parse_received(text):
    return json.loads(
        text,
        object_pairs_hook=Pairs,
        parse_int=Number,
        parse_float=Number,
        parse_constant=lambda name: Number(name),
    )


def render(value, limit=120):
    """Short JSON-like text of an expected or received value, for reports."""

    def go(v):
        if isinstance(v, Number):
            return v.text
        if isinstance(v, Pairs):
            return "{" + ", ".join(json.dumps(k) + ": " + go(x) for k, x in v) + "}"
        if isinstance(v, dict):
            return "{" + ", ".join(json.dumps(k) + ": " + go(x) for k, x in v.items()) + "}"
        if isinstance(v, list):
            return "[" + ", ".join(go(x) for x in v) + "]"
        if isinstance(v, float):
            return float.__repr__(v)
        return json.dumps(v)

    text = go(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def key_difference(expected, received):
    """The first place where an object's keys differ from the expected ones."""
    at = next((i for i, (e, r) in enumerate(zip(expected, received)) if e != r),
              min(len(expected), len(received)))
    if at < len(expected) and at < len(received):
        what = f"key {at + 1} is {render(received[at])}, expected {render(expected[at])}"
    elif at < len(expected):
        what = f"key {at + 1}, {render(expected[at])}, is missing"
    else:
        what = f"key {at + 1}, {render(received[at])}, is not expected"
    return f"{what} ({len(received)} keys, expected {len(expected)})"


def differences(expected, received, path="$"):
    """Where `received` (parsed by parse_received) differs from `expected` (from to_json)."""
    if isinstance(expected, bool) or expected is None:
        same = received is expected
    elif isinstance(expected, str):
        same = isinstance(received, str) and received == expected
    elif isinstance(expected, int):
        same = (isinstance(received, Number) and received.is_integer_token()
                and int(received.text) == expected)
    elif isinstance(expected, float):
        try:
            got = float(received.text) if isinstance(received, Number) else None
        except (ValueError, OverflowError):
            got = None
        same = (got is not None and got == expected
                and math.copysign(1, got) == math.copysign(1, expected))
    elif isinstance(expected, list):
        if not isinstance(received, list) or isinstance(received, Pairs):
            same = False
        elif len(received) != len(expected):
            return [f"at {path}: expected {len(expected)} items, got {len(received)}: "
                    f"expected {render(expected)}, got {render(received)}"]
        else:
            found = []
            for i, (e, r) in enumerate(zip(expected, received)):
                found += differences(e, r, f"{path}[{i}]")
            return found
    elif isinstance(expected, dict):
        if not isinstance(received, Pairs):
            same = False
        else:
            keys = [k for k, _ in received]
            if keys != list(expected):
                return [f"at {path}: {key_difference(list(expected), keys)}"]
            found = []
            for k, r in received:
                found += differences(expected[k], r, f"{path}[{json.dumps(k)}]")
            return found
    else:
        raise TypeError(repr(expected))
    if same:
        return []
    return [f"at {path}: expected {render(expected)}, got {render(received)}"]


# --- random documents ---------------------------------------------------------------------

TRICKY_STRINGS = [
    "y", "Y", "n", "N", "yes", "Yes", "No", "NO", "nO", "on", "On", "OFF", "off", "true",
    "True", "FALSE", "tRUE", "~", "null", "Null", "NULL", "nULL", "", " ",
    "1e3", "6e10", "1e-5", "1e+3", "1.e+3", "4e12345", "-4e12345", "0o17", "0x1F", "0x_1F",
    "+0x1F", "0b101", "0b", "017", "08", "09", "00", "-0", "+1", "0.", "1.", "1_000", "1__0",
    "1.0_0", "_1", "1:30", "1:30.5", "12:60", "-1:30", "190:20:30", ".5", "-.5", "+.5", ".",
    "._", "+.inf", ".inf", "-.inf", ".NaN", ".nan", "NaN", "Infinity", "-Infinity",
    "2001-12-14", "2001-12-14 21:59:43.10 -5", "2001-12-14t21:59:43.10-05:00",
    "2001-12-14T21:59:43Z", "2021-02-30", "12:30:45", "=", "<<", "-", "?", ":", "#", "!",
    "&a", "*a", "%", "@", "`", "|", ">", "- a", "a: b", "a #b", "{}", "[]", "{a: 1}", "---",
    "...", "%YAML 1.1", "0", "-1", "3.14", "'q'", '"q"',
]

PIECES = (
    ["timmy", "tower", "mood", "calm", "a", "Z", " ", "  ", "\t", "\n", "\r", "\r\n", "é", "中",
     "\xa0", "\x85", "\u2028", "\u2029", "\ufeff", "\U0001F600", "\U0001F9D1\u200d\U0001F4BB",
     '"', "'", "\\", "\\ ", "#", ": ", " #", "- ", ":", "&", "*", "!", "|", ">", "%", "@", "`",
     "{", "}", "[", "]", ",", "?", "\x7f"]
    + [chr(c) for c in range(0x20)]
    + [chr(c) for c in range(0x80, 0xA0)]
)

WORDS = ["the", "Tower", "is", "coming", "along", "nicely;", "visitors:", "3", "—", "ok"]

INT_EDGES = [0, 1, -1, 2**31 - 1, 2**31, -2**31, 2**32, 2**53 - 1, 2**53, 2**53 + 1,
             -(2**53 + 1), 2**63 - 1, 2**63, -2**63, -2**63 - 1, 2**64 - 1, 2**64, -2**64,
             10**40, -10**40]

FLOAT_EDGES = [0.0, -0.0, 5e-324, -5e-324, 2.2250738585072014e-308, 2.225073858507201e-308,
               1.7976931348623157e308, -1.7976931348623157e308, 0.1, 0.5, 1.0, -1.0, 100.0,
               1e16, 1e-7, 1e22, 1e23, 9007199254740993.0, 123456789.125, float("inf"),
               float("-inf"), float("nan")]


class Generator:
    def __init__(self, rnd):
        self.rnd = rnd
        self.shared = []  # containers to use twice in one document (anchors and aliases)

    def string(self):
        r = self.rnd
        shape = r.random()
        if shape < 0.3:
            return r.choice(TRICKY_STRINGS)
        if shape < 0.45:  # long: over any `width`, with spaces to fold at
            return " ".join(r.choice(WORDS) for _ in range(r.randint(15, 60)))
        if shape < 0.6:  # several lines, with or without trailing newlines
            lines = [" ".join(r.choice(WORDS) for _ in range(r.randint(0, 6)))
                     for _ in range(r.randint(2, 5))]
            return "\n".join(lines) + r.choice(["", "\n", "\n\n", " ", "\n "])
        text = "".join(r.choice(PIECES) for _ in range(r.randint(1, 8)))
        if r.random() < 0.2:
            text = r.choice([" ", "\t", "  "]) + text + r.choice(["", " ", "\t"])
        return text

    def integer(self):
        r = self.rnd
        if r.random() < 0.5:
            return r.choice(INT_EDGES)
        bits = r.choice([3, 8, 16, 31, 32, 53, 63, 64, 65, 100, 200])
        return r.getrandbits(bits) * r.choice([1, -1])

    def floating(self):
        r = self.rnd
        shape = r.random()
        if shape < 0.4:
            return r.choice(FLOAT_EDGES)
        if shape < 0.7:
            return struct.unpack("<d", r.getrandbits(64).to_bytes(8, "little"))[0]
        return round(r.uniform(-1e4, 1e4), r.randint(0, 6))

    def date(self):
        r = self.rnd
        return datetime.date(r.randint(1, 9999), r.randint(1, 12), r.randint(1, 28))

    def moment(self):
        r = self.rnd
        day = self.date()
        micro = r.choice([0, 0, 100000, r.randint(1, 999999)])
        tz = r.choice([None, None, datetime.timezone.utc,
                       datetime.timezone(datetime.timedelta(minutes=r.randint(-1439, 1439)))])
        return datetime.datetime(day.year, day.month, day.day, r.randint(0, 23),
                                 r.randint(0, 59), r.randint(0, 59), micro, tzinfo=tz)

    def scalar(self, json_only):
        r = self.rnd
        kinds = ["str"] * 5 + ["int"] * 2 + ["float"] * 2 + ["bool", "null"]
        if not json_only:
            kinds += ["date", "datetime"]
        kind = r.choice(kinds)
        if kind == "str":
            return self.string()
        if kind == "int":
            return self.integer()
        if kind == "float":
            value = self.floating()
            while json_only and not math.isfinite(value):
                value = self.floating()
            return value
        if kind == "bool":
            return r.random() < 0.5
        if kind == "null":
            return None
        return self.date() if kind == "date" else self.moment()

    def key(self, json_only):
        r = self.rnd
        if json_only or r.random() < 0.7:
            return self.string() if r.random() < 0.8 else r.choice(["mood", "a", "b", "visitors"])
        kind = r.choice(["int", "bool", "null", "float", "date", "datetime"])
        if kind == "int":
            return self.integer()
        if kind == "bool":
            return r.random() < 0.5
        if kind == "null":
            return None
        if kind == "float":
            return self.floating()
        return self.date() if kind == "date" else self.moment()

    def mapping(self, depth, json_only):
        r = self.rnd
        out = {}
        for _ in range(r.choice([0, 1, 2, 3, 4, 6])):
            k = self.key(json_only)
            out[k] = self.value(depth + 1, json_only)
            if r.random() < 0.1 and not json_only:
                # A key that a string key turns into too: the later value wins.
                twin = key_text(k)
                if twin != k:
                    out[twin] = self.value(depth + 1, json_only)
        return out

    def value(self, depth, json_only):
        r = self.rnd
        if depth < 3 and r.random() < 0.35:
            if self.shared and not json_only and r.random() < 0.1:
                return r.choice(self.shared)
            if r.random() < 0.6:
                made = self.mapping(depth, json_only)
            else:
                made = [self.value(depth + 1, json_only) for _ in range(r.choice([0, 1, 2, 3, 5]))]
            self.shared.append(made)
            return made
        return self.scalar(json_only)

    def document(self, json_only):
        self.shared = []
        shape = self.rnd.random()
        if shape < 0.85:
            return self.mapping(0, json_only)
        if shape < 0.95:
            return [self.value(1, json_only) for _ in range(self.rnd.randint(0, 5))]
        return self.scalar(json_only)

    def dump_options(self):
        r = self.rnd
        options = {}
        choices = {
            "sort_keys": [True, False],
            "allow_unicode": [True, False],
            "default_flow_style": [None, False, True],
            "width": [20, 40, 80, 120, 4096, float("inf")],
            "indent": [2, 3, 4, 8],
            "explicit_start": [True],
            "explicit_end": [True],
            "version": [(1, 1)],
            "line_break": ["\n", "\r", "\r\n"],
        }
        for name, values in choices.items():
            if r.random() < 0.4:
                options[name] = r.choice(values)
        if r.random() < 0.05:
            options["canonical"] = True
        return options

    def agent_like(self):
        """A mapping as agents write their state: several top-level members under plain
        names, each holding anything."""
        names = ["identity", "mood", "activity", "familiar", "meta", "objects", "visitors",
                 "weather", "inventory", "log", "x", "_private", "2nd", "a_b", "Zed"]
        return {name: self.value(1, False)
                for name in self.rnd.sample(names, self.rnd.randint(2, 8))}

    def edited(self, state):
        """`state` (a dict) with one top-level member changed, added or removed, as an agent
        rewrites its file: the rest of the text stays as it was, and the bridge reads only
        what changed."""
        r = self.rnd
        edited = dict(state)
        keys = list(edited)
        choice = r.random()
        if keys and choice < 0.6:
            edited[r.choice(keys)] = self.value(1, False)
        elif keys and choice < 0.8:
            del edited[r.choice(keys)]
        else:
            edited[self.key(False)] = self.value(1, False)
        return edited

    def json_options(self):
        r = self.rnd
        options = {}
        if r.random() < 0.5:
            options["indent"] = r.choice([None, 0, 2, 4, "\t"])
        if r.random() < 0.5:
            options["ensure_ascii"] = False
        if r.random() < 0.3:
            options["sort_keys"] = True
        if r.random() < 0.3:
            options["separators"] = (",", ":")
        return options


def call_text(function, options, argument="state"):
    args = "".join(f", {k}={v!r}" for k, v in options.items())
    return f"{function}({argument}{args})"


# --- the named table ----------------------------------------------------------------------

# Each entry: (name, how the file is made, expected JSON of the whole file, PyYAML's own
# reading where it differs from the contract). How the file is made: ("dump", value) writes
# yaml.safe_dump({"value": value}), and the expected JSON is {"value": expected}; ("yaml",
# text) and ("json", text) write the text as it is.

def dumped(name, value, expected, **options):
    return (name, ("dump", value, options), {"value": expected}, None)


def yaml_text(name, text, expected, pyyaml=None):
    return (name, ("yaml", text), expected, pyyaml)


def json_text(name, text, expected):
    return (name, ("json", text), expected, None)


UTC = datetime.timezone.utc

NAMED = [
    *(dumped(f"the string {s!r}", s, s) for s in [
        "y", "n", "yes", "no", "on", "off", "Y", "NO", "1e3", "6e10", "1e-5", "1e+3",
        "4e12345", "0o17", "0x1F", "0b101", "017", "08", "1_000", "1:30", "190:20:30", ".5",
        "-.5", "+.inf", ".NaN", "2001-12-14", "2001-12-14 21:59:43.10 -5", "~", "null", "=",
        "<<", "-", "?", ":", "#", "!", "&a", "*a", "%", "@", "`", "", " lead", "trail ",
        "tab\there", "a\nb", "a\nb\n", "line\u2028separator", "next\x85line",
        "paragraph\u2029separator", "\ufeffbom", "\x00\x01\x1f\x7f\x80\x9f", "\U0001F600",
        "quote \" and ' and \\",
    ]),
    # With allow_unicode, line and paragraph separators are written as they are, in quotes,
    # followed by a line break and indentation that are not part of the string.
    *(dumped(f"the string {s!r} (allow_unicode)", s, s, allow_unicode=True) for s in [
        "line\u2028separator", "paragraph\u2029separator", "\u2028", "\U0001F600 é 中",
    ]),
    # PyYAML writes U+0085 the same way but reads it back as a line break, folded into a
    # space: what the file says is a space.
    dumped("the string 'next\\x85line' (allow_unicode)", "next\x85line", "next line",
           allow_unicode=True),
    dumped("the int 2**64", 2**64, 2**64),
    dumped("the int -2**64", -2**64, -2**64),
    dumped("the int 2**63", 2**63, 2**63),
    dumped("the int -2**63-1", -2**63 - 1, -2**63 - 1),
    dumped("the int 2**53+1", 2**53 + 1, 2**53 + 1),
    dumped("the int 10**40", 10**40, 10**40),
    dumped("the float inf", float("inf"), ".inf"),
    dumped("the float -inf", float("-inf"), "-.inf"),
    dumped("the float nan", float("nan"), ".nan"),
    dumped("the float -0.0", -0.0, -0.0),
    dumped("the float 5e-324", 5e-324, 5e-324),
    dumped("the float 1.7976931348623157e308", 1.7976931348623157e308, 1.7976931348623157e308),
    dumped("the float 1e16", 1e16, 1e16),
    dumped("the float 0.1", 0.1, 0.1),
    dumped("the float 1.0", 1.0, 1.0),
    dumped("a date", datetime.date(2001, 12, 14), "2001-12-14"),
    dumped("a naive datetime", datetime.datetime(2001, 12, 14, 21, 59, 43),
           "2001-12-14T21:59:43"),
    dumped("an aware datetime (UTC)", datetime.datetime(2001, 12, 14, 21, 59, 43, 100000, UTC),
           "2001-12-14T21:59:43.100000+00:00"),
    dumped("an aware datetime (-05:00)",
           datetime.datetime(2001, 12, 14, 21, 59, 43,
                             tzinfo=datetime.timezone(datetime.timedelta(hours=-5))),
           "2001-12-14T21:59:43-05:00"),
    dumped("int, bool and null keys", {2**64: "a", -1: "b", True: "c", None: "d"},
           {"18446744073709551616": "a", "-1": "b", "true": "c", "null": "d"}),
    dumped("float keys", {1e16: "a", 0.5: "b", -0.0: "c", float("inf"): "d"},
           {"-0.0": "c", "0.5": "b", "1e+16": "a", ".inf": "d"}),  # sort_keys sorts them
    dumped("date keys", {datetime.date(2001, 12, 14): "a",
                         datetime.datetime(2001, 12, 14, 21, 59, 43, 100000, UTC): "b"},
           {"2001-12-14": "a", "2001-12-14T21:59:43.100000+00:00": "b"}),
    dumped("a key that becomes another's string", {1: "int", "x": 0, "1": "str"},
           {"1": "str", "x": 0}),
    yaml_text("a: 0x1F", "a: 0x1F\n", {"a": 31}),
    yaml_text("a: 017", "a: 017\n", {"a": 15}),
    yaml_text("a: 0b101", "a: 0b101\n", {"a": 5}),
    yaml_text("a: 1_000", "a: 1_000\n", {"a": 1000}),
    yaml_text("a: 190:20:30", "a: 190:20:30\n", {"a": 685230}),
    yaml_text("a: 1.0e+400", "a: 1.0e+400\n", {"a": "1.0e+400"}),
    yaml_text("a: .5", "a: .5\n", {"a": 0.5}),
    yaml_text("a: 2001-12-14t21:59:43.10-05:00", "a: 2001-12-14t21:59:43.10-05:00\n",
              {"a": "2001-12-14T21:59:43.100000-05:00"}),
    yaml_text("a: 2001-12-14 21:59:43.10 -5", "a: 2001-12-14 21:59:43.10 -5\n",
              {"a": "2001-12-14T21:59:43.100000-05:00"}),
    yaml_text("a: 2021-02-30", "a: 2021-02-30\n", {"a": "2021-02-30"},
              pyyaml="refuses the file (ValueError: day is out of range for month)"),
    yaml_text("a: =", "a: =\n", {"a": "="},
              pyyaml="refuses the file (no constructor for tag:yaml.org,2002:value)"),
    yaml_text("a: !!str 123", "a: !!str 123\n", {"a": "123"}),
    yaml_text('a: !!int "12"', 'a: !!int "12"\n', {"a": 12}),
    yaml_text('a: !!float "1"', 'a: !!float "1"\n', {"a": 1.0}),
    yaml_text("a: Yes", "a: Yes\n", {"a": True}),
    yaml_text("a: ~", "a: ~\n", {"a": None}),
    yaml_text("a: +.inf", "a: +.inf\n", {"a": "+.inf"}),
    yaml_text("a: .NaN", "a: .NaN\n", {"a": ".NaN"}),
    yaml_text("a: {<<: {x: 1}, y: 2}", "a: {<<: {x: 1}, y: 2}\n", {"a": {"x": 1, "y": 2}}),
    yaml_text("%YAML 1.2 directive", "%YAML 1.2\n---\na: 1e3\nb: yes\nc: 0o17\n",
              {"a": 1000.0, "b": "yes", "c": 15},
              pyyaml="reads YAML 1.1 whatever the directive: {a: '1e3', b: true, c: '0o17'}"),
    json_text('JSON {"a": 1e3, ...}', '{"a": 1e3, "b": [1, 2.5, "x"]}',
              {"a": 1000.0, "b": [1, 2.5, "x"]}),
    json_text("JSON with 2**64 and -0.0", '{"big": 18446744073709551616, "z": -0.0}',
              {"big": 2**64, "z": -0.0}),
    json_text("JSON with an escaped astral character", '{"s": "\\ud83d\\ude00"}',
              {"s": "\U0001F600"}),
]


def named_file(how):
    kind, what = how[:2]
    if kind == "dump":
        options = how[2]
        made_by = call_text("yaml.safe_dump", options, "{'value': value}")
        return yaml.safe_dump({"value": what}, **options), made_by
    return what, f"the {kind.upper()} text as it is"


def oracle_disagreement(how, expected, pyyaml):
    """Checks the table against PyYAML: None if they agree as the entry says they do."""
    kind = how[0]
    text, _ = named_file(how)
    try:
        read = to_json(json.loads(text) if kind == "json" else pyyaml_reads(text))
    except Exception as e:  # noqa: BLE001 - any refusal is PyYAML's reading here
        read = e
    agrees = not isinstance(read, Exception) and exact(read) == exact(expected)
    if pyyaml is None and not agrees:
        got = f"raises {read!r}" if isinstance(read, Exception) else render(read)
        return f"the table says {render(expected)} but PyYAML reads {got}"
    if pyyaml is not None and agrees:
        return "the table says PyYAML differs here, but PyYAML now agrees: update the table"
    return None


# --- the exchange -------------------------------------------------------------------------

def send(message):
    sys.stdout.write(json.dumps(message) + "\n")
    sys.stdout.flush()


def receive():
    line = sys.stdin.buffer.readline()
    if not line:
        sys.exit("the Rust side closed stdin")
    return json.loads(line.decode("utf-8"))


def write_state(path, text):
    """Writes the way an agent does: a temporary file in the same folder, then a rename."""
    temp = os.path.join(os.path.dirname(path), "." + os.path.basename(path) + ".tmp")
    with open(temp, "wb") as f:
        f.write(text.encode("utf-8"))
    os.replace(temp, path)


def shown(text, max_lines=40):
    """The file's text for a report, indented: lines split at \\n only, and every other
    character that is not printable (tab, CR, U+2028, ...) shown as <U+XXXX>."""
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    out = ["    " + "".join(c if c.isprintable() else f"<U+{ord(c):04X}>" for c in line)
           for line in lines[:max_lines]]
    if len(lines) > max_lines:
        out.append(f"    … ({len(lines) - max_lines} more lines)")
    return "\n".join(out)


def check(path, label, kind, text, expected, made_by, keep=False):
    """Writes `text`, and reports whether the state the bridge sent is `expected`. With
    `keep`, the file is left for the next one to be written over if the bridge sent a state
    (the return value says), instead of a reset in between."""
    write_state(path, text)
    send({"wrote": label, "kind": kind, "keep": keep})
    outcome = receive()
    delivered = "data" in outcome
    if "data" in outcome:
        found = differences(expected, parse_received(outcome["data"]))
    elif "refused" in outcome:
        found = [f"the bridge refused the file: {outcome['refused']}"]
    else:
        found = [f"no state: {outcome['silent']}"]
    if not found:
        send({"verdict": "ok"})
        return delivered
    shown_found = found[:5] + ([f"… and {len(found) - 5} more"] if len(found) > 5 else [])
    report = "\n".join(
        [f"{label}:"]
        + ["  " + f for f in shown_found]
        + [f"  expected {render(expected, 400)}",
           f"  written by {made_by}; the file, {len(text.encode('utf-8'))} bytes:",
           shown(text)]
    )
    send({"verdict": "mismatch", "label": label, "report": report})
    return delivered


def main():
    path = sys.argv[1]
    seed_text = os.environ.get("STATE_VALUES_SEED")
    seed = int(seed_text) if seed_text else random.SystemRandom().randrange(2**32)
    count = int(os.environ.get("STATE_VALUES_COUNT") or DEFAULT_COUNT)
    send({"hello": {"pyyaml": yaml.__version__, "seed": seed, "count": count,
                    "named": len(NAMED)}})

    for name, how, expected, pyyaml in NAMED:
        problem = oracle_disagreement(how, expected, pyyaml)
        if problem is not None:
            sys.exit(f"the named table is wrong at {name!r}: {problem}")
        text, made_by = named_file(how)
        if pyyaml is not None:
            made_by += f" (PyYAML itself {pyyaml})"
        check(path, f"named: {name}", "named", text, expected, made_by)

    rnd = random.Random(seed)
    generator = Generator(rnd)
    roundtrip = 0
    edits = 0
    for i in range(1, count + 1):
        json_only = rnd.random() < 0.15
        agent_like = not json_only and rnd.random() < 0.4
        state = generator.agent_like() if agent_like else generator.document(json_only)
        if json_only:
            options = generator.json_options()
            text = json.dumps(state, **options)
            expected = to_json(json.loads(text))
            made_by = call_text("json.dumps", options)
        else:
            options = generator.dump_options()
            text = yaml.safe_dump(state, **options)
            read = pyyaml_reads(text)
            expected = to_json(read)
            if exact(expected, ordered=False) != exact(to_json(state), ordered=False):
                roundtrip += 1  # PyYAML reads back something else than it dumped
            made_by = call_text("yaml.safe_dump", options)
        # Half the mappings are then written again with one member changed, in the same
        # style, over the first: the rest of the text stays, and the bridge reads only what
        # changed.
        edit = None
        if not json_only and isinstance(state, dict) and rnd.random() < 0.5:
            edit_text = yaml.safe_dump(generator.edited(state), **options)
            edit_expected = to_json(pyyaml_reads(edit_text))
            if exact(edit_expected) != exact(expected):
                edit = (edit_text, edit_expected)
        delivered = check(path, f"random document {i} of {count} (seed {seed})", "random", text,
                          expected, made_by, keep=edit is not None)
        if edit is not None and delivered:
            edits += 1
            check(path, f"random document {i} of {count}, edited (seed {seed})", "random",
                  edit[0], edit[1], made_by + ", then again with one member changed")

    send({"done": {"named": len(NAMED), "random": count, "edited": edits, "seed": seed,
                   "pyyaml": yaml.__version__, "pyyaml_roundtrip_differences": roundtrip}})


if __name__ == "__main__":
    main()
