"""Which values are personal, and so stay out of logs, messages and exports.

The contract marks its personal columns (`Column.personal`: where a customer lives, how they
speak and may be reached, what they told us). Keys are pseudonymous and may appear anywhere;
personal values appear only in answers to authorised callers and in the export columns a
scheduler needs. Features carry the values of the columns they are built from: a feature of
a personal column's name holds its values, and the derived ones below embed them.
"""

from __future__ import annotations

from features.contract.schema import PERSONAL_COLUMNS

# Derived feature → the personal column whose values it embeds.
DERIVED = {
    "lane": "destination_region",
    "customer_timezone": "timezone",
}

PERSONAL_FEATURES: frozenset[str] = PERSONAL_COLUMNS | frozenset(DERIVED)
"""Feature names whose values are personal: reasons bound for logs and exports name them
without their value."""
