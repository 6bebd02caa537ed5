"""The C enums and flags by Python name, from the generated table.

Why: the package must not copy C enum values by hand (they would drift from the
headers unnoticed). _enum_table.py is generated from include/aims/*.h by
bindings/python/gen_enums.py and keeps the C names verbatim; this module turns
them into the names the Python API uses, by dropping the prefix the members of
an enum share: "AIMS_LB_ROUND_ROBIN" -> "round_robin". The result does not
depend on that prefix, so renaming AIMS_MODEL_KIND_LINEAR to AIMS_MODEL_KIND_LINEAR
(docs/NAMING.md) changes nothing here. Enums are named "enum aims_x" (see
gen_enums.py: a bare quoted "aims_x" would be taken for a function by
tools/rename-0.1.py).
"""

from ._enum_table import DEFINES, ENUMS  # noqa: F401 (DEFINES: re-exported)


def _prefix(members):
    """The prefix every member name shares, cut back to its last '_'."""
    names = list(members)
    if len(names) == 1:
        return names[0][:names[0].rfind("_") + 1]
    first, last = min(names), max(names)
    n = 0
    while n < min(len(first), len(last)) and first[n] == last[n]:
        n += 1
    return first[:first.rfind("_", 0, n) + 1]


def names(enum):
    """{python_name: value} of the C enum ``enum`` ("enum aims_lb_policy"), in
    header order: the members' shared prefix dropped, lower case
    ("AIMS_LB_ROUND_ROBIN" -> "round_robin")."""
    members = ENUMS[enum]
    cut = len(_prefix(members))
    return {name[cut:].lower(): value for name, value in members.items()}


def values(enum):
    """{value: python_name} of a C enum (the inverse of names())."""
    return {value: name for name, value in names(enum).items()}
