"""Time predictors: how long one engine iteration takes on one instance.

Every predictor implements :class:`tpsim.perf.base.LatencyModel`; the event
loop only ever calls that interface, so a measured-profile model can stand
beside the analytical one.
"""
