"""
Fixtures of the reliability suite (issue 7): faults, crashes, revoked tokens, hostile input,
secrets and warehouse outages, against the real sandbox and real databases.

Sizes follow ``SFOX_RELIABILITY_PROFILE`` (``ci`` by default, ``soak`` for ``make soak``);
the Hypothesis profile of the same name is loaded here.
"""

from __future__ import annotations

from hypothesis import HealthCheck, settings

from tests.reliability.support import PROFILE

#: Examples of the cheap properties; the heavy ones (warehouse + HTTP per example) set
#: their own count, ``support.HEAVY_EXAMPLES``.
for _name, _examples in (("ci", 150), ("soak", 3000)):
    settings.register_profile(
        _name,
        max_examples=_examples,
        deadline=None,
        derandomize=_name == "ci",  # CI runs are reproducible; soak explores new examples
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
        print_blob=True,
    )
settings.load_profile(PROFILE)
