"""The event kinds of the log: the whole vocabulary, named once.

Handlers name the kinds of the facts they return (``verification``, ``candidate``, ``note``); the state
machine folds them and the views render them, all from these names.
"""

RUN_STARTED = "run.started"
RUN_RESUMED = "run.resumed"
RUN_ENDED = "run.ended"
STEP_STARTED = "step.started"
STEP_COMPLETED = "step.completed"
STEP_FAILED = "step.failed"
STEP_INVALIDATED = "step.invalidated"
TRANSITION = "transition"
VERIFICATION = "verification"
DECISION = "decision"
CANDIDATE = "candidate"
NOTE = "note"
# A library fell back to something other than what it was asked (see handlers.common.library_fallbacks).
WARNING = "warning"
# A lease left by a holder that is gone (its process, or a lease from another host past its expiry).
LEASE_TAKEN_OVER = "lease.taken_over"
EVENT_KINDS = (RUN_STARTED, RUN_RESUMED, RUN_ENDED, STEP_STARTED, STEP_COMPLETED, STEP_FAILED,
               STEP_INVALIDATED, TRANSITION, VERIFICATION, DECISION, CANDIDATE, NOTE, WARNING,
               LEASE_TAKEN_OVER)
# What a step learned: recorded with its step.completed, in the same transaction. Decisions are the
# runner's (the rules'), the others a handler's.
FACT_KINDS = (VERIFICATION, DECISION, CANDIDATE, NOTE, WARNING)
