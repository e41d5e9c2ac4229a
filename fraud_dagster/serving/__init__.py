"""The online service's runtime: request and response models (``api``), scoring with an exported
model (``scoring``), the online feature store (``store``, ``redis_store``), keeping model and state
current (``live``), micro-batching (``microbatch``) and the prediction log (``prediction_log``).

Kept apart from ``fraud_dagster.core``, which is the pipeline's pure logic, and free of Dagster and
BentoML: ``bento/service.py`` wires it into BentoML, and the serving benchmark's plain FastAPI app
uses the same modules.
"""
