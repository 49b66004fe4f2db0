"""Batch delivery: many jobs bought in one provider batch at half price, collected later.

- ``states``: the two state vocabularies (``BATCH_STATE_*``, ``JOB_STATE_*``) as one;
- ``gemini``: the Files API and Gemini Batch API client (AI Studio);
- ``lines``: a job's request line, and the answers matched back to jobs by key;
- ``book``: the durable record of each submitted batch (what it holds, where it stands);
- ``submit``: claim the jobs, send one batch per backend and model, record it before polling;
- ``collect``: look at a batch, and when it ended turn its answers into masters or reasons;
- ``deliver``: a run's batch delivery end to end, on top of the ordinary chain.
"""
