"""``python -m serving`` = ``tpsim run``, for users coming from LLMServingSim."""
