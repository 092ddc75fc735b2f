"""A fleet's books: many participants, each trained, evaluated and submitted in a run folder of its own.

`plan.py` is the fleet folder and its plan file, `stages.py` each participant's stages, what makes each one
done and the status file that records what ran, `report.py` the table of every participant's results. The
jobs that do the work and the executors that run them (submitit) are the command's (`npga/commands/fleet.py`):
these modules only read and write a fleet's files, so `npga fleet status` and `report` need no trainer.
Format and rules: docs/fleet.md.
"""
