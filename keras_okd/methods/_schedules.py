"""Schedules shared by the presets."""

from keras_okd.knowledge import RampUp


def optional_rampup(rampup_epochs):
    """The presets' `rampup_epochs` argument as a part's schedules: `[RampUp(rampup_epochs)]`, or `[]` (no ramp-up)
    for 0 or None; a list, so that a preset can multiply it with a part's other schedules (`Decay(...)`).

    Args:
        rampup_epochs: length of the ramp-up `exp(-5 (1 - e / length)^2)` (`keras_okd.knowledge.RampUp`, the mean
            teacher's, ONE's and OKDDip's 80 epochs); 0 or None for none.

    Returns:
        A list of `Schedule`s, for a part's `schedule=`.

    Example:

    >>> optional_rampup(80), optional_rampup(0)
    ([RampUp(length=80)], [])
    """
    return [RampUp(rampup_epochs)] if rampup_epochs else []
