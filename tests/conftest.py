"""Settings for the whole suite."""

from __future__ import annotations

from hypothesis import settings

# Property tests judge behaviour, not speed: a slow CI machine must not fail them on time.
settings.register_profile("default", deadline=None, print_blob=True)
settings.load_profile("default")
